//! Types shared by the kernel programs (`sensor-ebpf`) and the agent.
//!
//! Every kernel event starts with [`EventHeader`] at offset 0; user space reads the `kind`
//! byte with [`EventKind::try_from`] and only then reads the record as the matching body,
//! through zerocopy's checked `FromBytes::read_from_prefix`, which refuses a short record. All
//! event structs are `#[repr(C)]` with explicit padding so the layout is the same on both
//! sides and no uninitialised bytes reach user space; their `IntoBytes` derive fails to
//! compile if a field change leaves a padding hole.
#![no_std]

pub mod event;
pub mod maps;
pub mod offsets;
pub mod syscall;

pub use event::*;
pub use maps::*;
pub use offsets::*;
