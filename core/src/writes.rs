//! Writes a manager sees, for whoever keeps copies of what the database holds (a query cache): the tables a statement writes or reads, and the listeners told once a write is done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// Told which tables were written through a manager (see
/// [`Manager::add_write_listener`](crate::Manager::add_write_listener)).
///
/// A statement outside a transaction is reported once it has finished (whatever its
/// outcome: a write whose reply was lost may still have been applied). A statement inside
/// a transaction is reported when it finishes and again when its transaction's `COMMIT`
/// finishes, so a copy re-read between the two is dropped too. Tables are named as
/// [`written_tables`] names them: unquoted, lower case, without their schema.
///
/// Called on the statement's own path, before its caller sees the result: it must not
/// block (spawn anything slow, such as a network call).
pub trait WriteListener: Send + Sync + 'static {
    /// `tables` were (or may have been) written.
    fn tables_written(&self, tables: &[String]);
}

/// The listeners of one pool; checked with one atomic load per statement while empty.
#[derive(Default)]
pub(crate) struct WriteListeners {
    any: AtomicBool,
    listeners: RwLock<Vec<Arc<dyn WriteListener>>>,
}

impl std::fmt::Debug for WriteListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteListeners").field("any", &self.any.load(Ordering::Relaxed)).finish()
    }
}

impl WriteListeners {
    pub(crate) fn add(&self, listener: Arc<dyn WriteListener>) {
        self.listeners.write().unwrap_or_else(PoisonError::into_inner).push(listener);
        self.any.store(true, Ordering::Release);
    }

    /// Whether nobody listens (the statement path then does nothing more).
    pub(crate) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    pub(crate) fn notify(&self, tables: &[String]) {
        if tables.is_empty() {
            return;
        }
        let listeners = self.listeners.read().unwrap_or_else(PoisonError::into_inner);
        for listener in listeners.iter() {
            listener.tables_written(tables);
        }
    }
}

/// One token of SQL text: a word (keyword or identifier, quotes removed) or a symbol.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Symbol(char),
}

/// Splits `sql` into words and symbols, skipping string literals, comments and numbers'
/// meaning (they are words that never match a keyword). Quoted identifiers (`"t"`,
/// `` `t` ``) are words, kept apart from keywords by being quoted.
fn tokens(sql: &str) -> Vec<(Token, bool)> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                // A literal; '' inside it is a quote.
                while let Some(c) = chars.next() {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    } else if c == '\\' {
                        chars.next();
                    }
                }
            }
            '"' | '`' => {
                let open = c;
                let mut word = String::new();
                for c in chars.by_ref() {
                    if c == open {
                        break;
                    }
                    word.push(c);
                }
                out.push((Token::Word(word), true));
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for c in chars.by_ref() {
                    if previous == '*' && c == '/' {
                        break;
                    }
                    previous = c;
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut word = String::from(c);
                while let Some(&next) = chars.peek() {
                    if next.is_alphanumeric() || next == '_' || next == '$' {
                        word.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push((Token::Word(word), false));
            }
            c if c.is_whitespace() => {}
            c => out.push((Token::Symbol(c), false)),
        }
    }
    out
}

/// Reads a possibly qualified name (`schema.table`, `"s"."t"`) starting at `i`: the table
/// part, lower case, and the index after the name.
fn name_at(tokens: &[(Token, bool)], mut i: usize) -> Option<(String, usize)> {
    let mut last = None;
    loop {
        match tokens.get(i) {
            Some((Token::Word(word), quoted)) if *quoted || !is_keyword(word) => {
                last = Some(word.to_lowercase());
                i += 1;
            }
            _ => break,
        }
        if tokens.get(i).is_some_and(|(t, _)| *t == Token::Symbol('.')) {
            i += 1;
        } else {
            break;
        }
    }
    // A name followed by `(` is a function, not a table (`FROM generate_series(1, 3)`).
    if tokens.get(i).is_some_and(|(t, _)| *t == Token::Symbol('(')) && !is_column_list(tokens, i) {
        return None;
    }
    last.map(|name| (name, i))
}

/// Whether the `(` at `i` opens the column list of `INSERT INTO t (a, b)`: it is, when an
/// earlier word is `INTO`. Callers only ask after a table name.
fn is_column_list(tokens: &[(Token, bool)], i: usize) -> bool {
    tokens[..i].iter().rev().take(8).any(|(t, quoted)| !quoted && is_word(t, "INTO"))
}

/// Words that end or qualify a clause and are never a table's unquoted name.
fn is_keyword(word: &str) -> bool {
    const KEYWORDS: [&str; 38] = [
        "SELECT",
        "FROM",
        "WHERE",
        "JOIN",
        "LEFT",
        "RIGHT",
        "INNER",
        "OUTER",
        "CROSS",
        "FULL",
        "NATURAL",
        "ON",
        "USING",
        "GROUP",
        "ORDER",
        "BY",
        "LIMIT",
        "OFFSET",
        "HAVING",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "AS",
        "SET",
        "VALUES",
        "RETURNING",
        "ONLY",
        "LATERAL",
        "IF",
        "EXISTS",
        "NOT",
        "TABLE",
        "INTO",
        "IGNORE",
        "LOW_PRIORITY",
        "WINDOW",
        "FOR",
        "LOCK",
    ];
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

fn is_word(token: &Token, keyword: &str) -> bool {
    matches!(token, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
}

/// The first name at or after `i`, skipping the modifiers a statement may put before it
/// (`ONLY`, `IF EXISTS`, `LOW_PRIORITY`, `IGNORE`, `TABLE`).
fn target_after(tokens: &[(Token, bool)], mut i: usize) -> Option<String> {
    const MODIFIERS: [&str; 8] =
        ["ONLY", "IF", "EXISTS", "LOW_PRIORITY", "IGNORE", "TABLE", "QUICK", "DELAYED"];
    while let Some((token, false)) = tokens.get(i) {
        if MODIFIERS.iter().any(|m| is_word(token, m)) {
            i += 1;
        } else {
            break;
        }
    }
    name_at(tokens, i).map(|(name, _)| name)
}

/// The tables `sql` may write, each once: the target of every `INSERT INTO`, `REPLACE
/// INTO`, `UPDATE`, `DELETE FROM`, `MERGE INTO` anywhere in it (so a `WITH` whose parts
/// write counts), and of `TRUNCATE`, `ALTER TABLE`, `DROP TABLE` and `COPY ... FROM`.
/// Names are unquoted, lower case and without their schema, so `"Public"."Orders"` and
/// `orders` are one table (two tables of that name in two schemas share it: more
/// invalidation, never less). A write through a function or a view is not seen.
pub fn written_tables(sql: &str) -> Vec<String> {
    let tokens = tokens(sql);
    let mut tables: Vec<String> = Vec::new();
    for (i, (token, quoted)) in tokens.iter().enumerate() {
        if *quoted {
            continue;
        }
        let previous = i.checked_sub(1).map(|p| &tokens[p].0);
        let after = |keyword: &str| {
            tokens[i + 1..]
                .iter()
                .take(3)
                .position(|(t, q)| !q && is_word(t, keyword))
                .and_then(|at| target_after(&tokens, i + 2 + at))
        };
        let table = if is_word(token, "INSERT")
            || is_word(token, "REPLACE") && i == 0
            || is_word(token, "MERGE")
        {
            after("INTO")
        } else if is_word(token, "UPDATE") {
            // `FOR UPDATE`, `DO UPDATE`, `KEY UPDATE` lock or resolve a conflict.
            let clause = previous.is_some_and(|p| {
                is_word(p, "FOR") || is_word(p, "DO") || is_word(p, "KEY") || is_word(p, "NO")
            });
            if clause { None } else { target_after(&tokens, i + 1) }
        } else if is_word(token, "DELETE") {
            // `ON DELETE CASCADE` in a table definition is not a statement.
            if previous.is_some_and(|p| is_word(p, "ON")) { None } else { after("FROM") }
        } else if i == 0 && (is_word(token, "TRUNCATE") || is_word(token, "COPY")) {
            target_after(&tokens, 1)
        } else if i == 0 && (is_word(token, "ALTER") || is_word(token, "DROP")) {
            tokens
                .get(1)
                .filter(|(t, _)| is_word(t, "TABLE"))
                .and_then(|_| target_after(&tokens, 2))
        } else {
            None
        };
        if let Some(table) = table
            && !tables.contains(&table)
        {
            tables.push(table);
        }
    }
    // `COPY t TO` reads; only `COPY t FROM` writes.
    if tokens.first().is_some_and(|(t, _)| is_word(t, "COPY"))
        && !tokens.iter().any(|(t, q)| !q && is_word(t, "FROM"))
    {
        tables.clear();
    }
    tables
}

/// The tables `sql` reads: every name after `FROM` or `JOIN`, and the further names of a
/// comma-separated `FROM` list, each once, named as [`written_tables`] names them. A view
/// is its own name (its base tables are not seen), and a common table expression's name
/// is listed too (it is never written, so it costs nothing).
pub fn read_tables(sql: &str) -> Vec<String> {
    let tokens = tokens(sql);
    let mut tables: Vec<String> = Vec::new();
    let mut in_from_list = false;
    let mut i = 0;
    while i < tokens.len() {
        let (token, quoted) = &tokens[i];
        let starts_name = !quoted && (is_word(token, "FROM") || is_word(token, "JOIN"))
            || in_from_list && *token == Token::Symbol(',');
        if starts_name {
            let mut at = i + 1;
            while tokens
                .get(at)
                .is_some_and(|(t, q)| !q && (is_word(t, "ONLY") || is_word(t, "LATERAL")))
            {
                at += 1;
            }
            if let Some((table, next)) = name_at(&tokens, at) {
                if !tables.contains(&table) {
                    tables.push(table);
                }
                in_from_list = !is_word(token, "JOIN") || in_from_list;
                i = next;
                continue;
            }
        } else if !quoted
            && matches!(token, Token::Word(w) if is_keyword(w) && !w.eq_ignore_ascii_case("AS"))
            || matches!(token, Token::Symbol('(' | ')' | ';'))
        {
            in_from_list = false;
        }
        i += 1;
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_tables_name_every_target() {
        let cases: [(&str, &[&str]); 16] = [
            ("INSERT INTO orders (id) VALUES ($1)", &["orders"]),
            ("insert into public.\"Orders\"(id) values (1)", &["orders"]),
            ("UPDATE accounts SET balance = balance - 1 WHERE id = ?", &["accounts"]),
            ("UPDATE ONLY accounts SET x = 1", &["accounts"]),
            ("DELETE FROM `audit` WHERE at < now()", &["audit"]),
            ("REPLACE INTO kv (k, v) VALUES ('a', 'b')", &["kv"]),
            ("TRUNCATE TABLE a, b", &["a"]),
            ("ALTER TABLE IF EXISTS rules ADD COLUMN x INT", &["rules"]),
            ("DROP TABLE rules", &["rules"]),
            (
                "WITH moved AS (DELETE FROM inbox RETURNING *) INSERT INTO archive SELECT * FROM moved",
                &["inbox", "archive"],
            ),
            ("INSERT INTO t (k) VALUES (1) ON CONFLICT (k) DO UPDATE SET n = t.n + 1", &["t"]),
            ("INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE n = n + 1", &["t"]),
            ("SELECT * FROM jobs WHERE id = 1 FOR UPDATE", &[]),
            ("SELECT 'UPDATE secrets SET x = 1' AS text", &[]),
            ("SELECT 1 -- DELETE FROM notes\n", &[]),
            ("COPY items FROM STDIN", &["items"]),
        ];
        for (sql, expected) in cases {
            assert_eq!(written_tables(sql), expected, "{sql}");
        }
        assert!(written_tables("COPY items TO STDOUT").is_empty());
        assert!(
            written_tables("CREATE TABLE t (id INT REFERENCES p ON DELETE CASCADE)").is_empty()
        );
    }

    #[test]
    fn read_tables_name_every_source() {
        let cases: [(&str, &[&str]); 8] = [
            ("SELECT name FROM rules WHERE id = $1", &["rules"]),
            (
                "SELECT * FROM a JOIN public.b ON a.id = b.a_id LEFT JOIN \"C\" c ON true",
                &["a", "b", "c"],
            ),
            ("SELECT * FROM a x, b AS y WHERE x.id = y.id", &["a", "b"]),
            ("SELECT count(*) FROM (SELECT id FROM inner_t) s", &["inner_t"]),
            ("SELECT * FROM generate_series(1, 3)", &[]),
            ("SELECT 1", &[]),
            ("SELECT a, b FROM t WHERE x IN (SELECT y FROM u)", &["t", "u"]),
            ("SELECT 'FROM fake' FROM real_t", &["real_t"]),
        ];
        for (sql, expected) in cases {
            assert_eq!(read_tables(sql), expected, "{sql}");
        }
    }

    #[test]
    fn listeners_hear_every_table_once_added() {
        #[derive(Default)]
        struct Heard(std::sync::Mutex<Vec<String>>);
        impl WriteListener for Heard {
            fn tables_written(&self, tables: &[String]) {
                self.0.lock().unwrap().extend_from_slice(tables);
            }
        }
        let listeners = WriteListeners::default();
        assert!(listeners.is_empty());
        let heard = Arc::new(Heard::default());
        listeners.add(Arc::clone(&heard) as Arc<dyn WriteListener>);
        assert!(!listeners.is_empty());
        listeners.notify(&["a".to_owned(), "b".to_owned()]);
        listeners.notify(&[]);
        assert_eq!(*heard.0.lock().unwrap(), ["a", "b"]);
    }
}
