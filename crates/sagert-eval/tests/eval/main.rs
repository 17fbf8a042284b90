//! sagert-eval's behaviour tests: one binary, one module per area.

mod benign;
mod evaluate;
mod import;
mod metrics;
mod report;
