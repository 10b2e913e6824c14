//! One file per command. Each wires the libraries together; none holds control-loop logic.
//! (`shardctl simulate` is the simulator's own command, [`shardctl_sim::run_simulate`].)

pub mod demo;
pub mod observe;
pub mod plan;
pub mod run;
pub mod schema;
pub mod validate;
