//! Opens submitted through io_uring never pass the syscall tracepoints; flag them so the
//! route is visible rather than silent.

use aya_ebpf::programs::RawTracePointContext;
use sensor_common::{EventKind, IoUringEvent, IORING_OP_OPENAT, IORING_OP_OPENAT2};

use crate::{
    kernel::{off, read, tp_arg},
    output::{header, is_agent, reserve, submit},
};

/// io_uring_submit_req(struct io_kiocb *req), and io_uring_submit_sqe from 5.19 to 6.3.
pub fn on_submit_req(ctx: &RawTracePointContext) -> Result<(), i64> {
    let req: u64 = tp_arg(ctx, 0);
    flag(read(req + off!(io_kiocb_opcode))?, 0)
}

/// io_uring_submit_sqe(void *ctx, void *req, u8 opcode, u64 user_data, ...) before 5.19.
pub fn on_submit_sqe(ctx: &RawTracePointContext) -> Result<(), i64> {
    flag(tp_arg(ctx, 2) as u8, tp_arg(ctx, 3))
}

fn flag(opcode: u8, user_data: u64) -> Result<(), i64> {
    if opcode != IORING_OP_OPENAT && opcode != IORING_OP_OPENAT2 {
        return Ok(());
    }
    if is_agent() {
        return Ok(());
    }
    let Some(mut entry) = reserve::<IoUringEvent>(EventKind::IoUring) else {
        return Ok(());
    };
    entry.write(IoUringEvent {
        header: header(EventKind::IoUring),
        opcode,
        _pad: [0; 7],
        user_data,
    });
    submit(entry);
    Ok(())
}
