//! Types shared by the kernel programs (`sensor-ebpf`) and the agent.
//!
//! Every kernel event starts with [`EventHeader`] at offset 0; user space reads the `kind`
//! byte with [`EventKind::try_from`] and only then reinterprets the record as the matching
//! body, after checking its length. All structs are `#[repr(C)]` with explicit padding so the
//! layout is the same on both sides and no uninitialised bytes reach user space.
#![no_std]

pub mod event;
pub mod maps;
pub mod offsets;
pub mod syscall;

pub use event::*;
pub use maps::*;
pub use offsets::*;
