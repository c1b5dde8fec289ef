//! Fixture for `ucm audit`: the service's start, already on ucm for one mode (not compiled).

use ucm::{ManagerMode, get_unified_manager};

#[tokio::main]
async fn main() {
    let manager = get_unified_manager(ManagerMode::AsyncModern).await.unwrap();
    drop(manager);
}
