//! The CRI streaming server (exec, attach, port-forward): its SPDY/3.1
//! framing first.

pub mod spdy;
