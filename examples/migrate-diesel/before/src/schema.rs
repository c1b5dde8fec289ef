//! The queue's table, as diesel's `table!` describes it (what `diesel print-schema` writes).

diesel::table! {
    /// The job queue.
    jobs (id) {
        /// The job's id.
        id -> Int8,
        /// What kind of work it is.
        kind -> Text,
        /// The job's input.
        payload -> Text,
        /// `queued`, `running`, `done` or `failed`.
        status -> Text,
        /// How many times a worker took it.
        attempts -> Int4,
        /// After this many failed attempts it stays `failed`.
        max_attempts -> Int4,
        /// The worker holding it while `running`.
        locked_by -> Nullable<Text>,
        /// The last failure's message.
        last_error -> Nullable<Text>,
    }
}
