//! `db.operation.name` and `db.query.summary` read from SQL text without keeping any of its literals: the leading keyword and the first table it names.

/// The operations ucm names in telemetry (`db.operation.name`).
pub(crate) const OPERATIONS: [&str; 16] = [
    "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "CREATE", "DROP", "ALTER", "BEGIN", "START",
    "COMMIT", "ROLLBACK", "SET", "PRAGMA", "TRUNCATE", "ANALYZE",
];

/// The statement's operation (`SELECT`, `INSERT`...), from its first keyword; `None` when
/// the statement starts with something else.
pub fn operation_name(sql: &str) -> Option<&'static str> {
    operation_index(sql).map(|i| OPERATIONS[i])
}

/// The index in [`OPERATIONS`] of the statement's operation.
pub(crate) fn operation_index(sql: &str) -> Option<usize> {
    let first = sql.split_whitespace().next()?.trim_end_matches(';');
    OPERATIONS.iter().position(|op| op.eq_ignore_ascii_case(first))
}

/// A low-cardinality summary: the operation and the table it targets (`SELECT items`,
/// `INSERT orders`), or the operation and `fallback` (the database) when no table is
/// named, or just the operation. Never a literal or a parameter.
pub fn query_summary(sql: &str, fallback: Option<&str>) -> String {
    let Some(operation) = operation_name(sql) else { return "db".to_owned() };
    let keyword = match operation {
        "SELECT" | "DELETE" | "WITH" => "FROM",
        "INSERT" => "INTO",
        "UPDATE" => "UPDATE",
        "CREATE" | "DROP" | "ALTER" | "TRUNCATE" => "TABLE",
        _ => "",
    };
    let mut words = sql.split_whitespace();
    let target = if keyword.is_empty() {
        None
    } else {
        words.by_ref().find(|w| w.eq_ignore_ascii_case(keyword));
        words
            .find(|w| !["IF", "NOT", "EXISTS", "ONLY"].iter().any(|k| k.eq_ignore_ascii_case(w)))
            // A subquery or a function is not a table.
            .filter(|w| !w.starts_with('('))
            .map(|w| w.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.')))
            .filter(|w| {
                !w.is_empty() && w.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            })
    };
    match target.or(fallback) {
        Some(target) => format!("{operation} {target}"),
        None => operation.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_and_summaries() {
        let cases = [
            ("SELECT name FROM items WHERE id = $1", Some("SELECT"), "SELECT items"),
            ("select 1", Some("SELECT"), "SELECT app"),
            ("  INSERT INTO public.orders (id) VALUES (?)", Some("INSERT"), "INSERT public.orders"),
            ("UPDATE accounts SET balance = balance - 10", Some("UPDATE"), "UPDATE accounts"),
            ("DELETE FROM t", Some("DELETE"), "DELETE t"),
            ("CREATE TABLE IF NOT EXISTS notes (id INT)", Some("CREATE"), "CREATE notes"),
            ("BEGIN", Some("BEGIN"), "BEGIN app"),
            ("SELECT 'secret' AS s FROM (SELECT 1) x", Some("SELECT"), "SELECT app"),
            ("EXPLAIN SELECT 1", None, "db"),
        ];
        for (sql, operation, summary) in cases {
            assert_eq!(operation_name(sql), operation, "{sql}");
            assert_eq!(query_summary(sql, Some("app")), summary, "{sql}");
        }
        assert!(!query_summary("SELECT * FROM t WHERE pw = 'hunter2'", None).contains("hunter2"));
    }
}
