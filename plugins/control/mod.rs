//! Control nodes: they shape a stream rather than produce or encode it.

pub mod adaptive;
pub mod dropper;
