//! Encoders: frames in, encoded images out.

pub mod jpeg;
