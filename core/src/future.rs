//! `BoxFuture`: the boxed, sendable future that ucm's object-safe traits return (transaction closures, credential providers).

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future; the return type of transaction closures and credential
/// providers.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
