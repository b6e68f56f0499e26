//! extauth-bridge: the external authentication program for Prosody and ejabberd.
//!
//! The binary is a thin wrapper around [`app::main`]; tests, benches and fuzz targets use
//! the pieces directly. See DESIGN.md for how they fit together.

pub mod app;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod fs;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod outcome;
pub mod protocol;
pub mod pty;
pub mod request;
pub mod router;
pub mod secret;
pub mod server;
pub mod setup;
pub mod signals;
pub mod state;
pub mod stdio;
