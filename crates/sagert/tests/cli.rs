//! Behaviour tests of the `sagert` binary: one test binary, modules by command.

mod cli {
    pub mod align;
    pub mod batch;
    pub mod config;
    pub mod embedded;
    pub mod encoders;
    pub mod eval;
    pub mod generate;
    pub mod real_server;
    pub mod serve;
    pub mod taxonomy;
    pub mod util;
}
