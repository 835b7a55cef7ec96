//! camgraph streams cameras to browsers and to monitoring. A YAML file (see `config`) names nodes
//! and wires them; `graph` turns the validated spec into running actix actors: cameras capture on
//! their own threads, encoders run on their own arbiters, sinks serve viewers. Frames travel between
//! them through latest-frame-wins fan-out points (`fanout`), shared as `Arc`/`Bytes` and never
//! copied per consumer; a consumer that falls behind skips to the newest frame and counts the drop.
//! Work happens only while someone downstream is subscribed. `http` exposes the guide's API, the
//! viewer page and `/metrics`; every node reports through the one `metrics` module.

pub mod adapt;
pub mod app;
pub mod client;
pub mod config;
pub mod error;
pub mod fanout;
pub mod frame;
pub mod graph;
pub mod http;
pub mod metrics;
pub mod mjpeg;
pub mod node;
pub mod pacing;
pub mod port;
pub mod registry;
pub mod stop;
#[cfg(test)]
pub mod testing;

#[path = "../plugins/mod.rs"]
pub mod plugins;

/// The configuration `camgraph` runs when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../configs/default.yaml");
