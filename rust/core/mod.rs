//! The pure-Rust cache: no pyo3 here, tested with `cargo test`.

pub mod cache;
pub mod clock;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod store;
pub mod waits;

pub use cache::Cache;
pub use clock::{Clock, ManualClock};
pub use metrics::{Metrics, MetricsSnapshot};
pub use policy::PolicyKind;
pub use store::{Full, Garbage, Held, Lookup, Released, Removed, Store, MAX_CAPACITY, NEVER};
