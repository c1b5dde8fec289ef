//! Fixture for `ucm audit`: names of connection calls that are not calls (comments, strings, docs, a type of our own, a local module); none may count (not compiled).

/// Calls `PgPool::connect(url)` in a doc comment: text, not code.
pub fn documented() {
    // PgPool::connect("postgres://in-a-comment");
    /* PgConnection::establish("in a block comment") */
    let text = "PgPool::connect(url) and tokio_postgres::connect(url) in a string";
    println!("{text} sqlx::PgPool::connect(\"inside a format string\")");
}

mod postgres {
    pub struct Client;
    impl Client {
        pub fn connect(_: &str) -> Self {
            Client
        }
    }
}

pub fn ours() {
    let _own = postgres::Client::connect("our own type, not the postgres crate");
    let _also = crate::postgres::Client::connect("still ours");
}
