//! Opens submitted through io_uring never pass the syscall tracepoints; flag them so the
//! route is visible rather than silent.

use aya_ebpf::programs::RawTracePointContext;
use sensor_common::{EventKind, IoUringEvent, IORING_OP_OPENAT, IORING_OP_OPENAT2};

use crate::{
    kernel::{off, read, tp_arg},
    output::{header, is_agent, reserve},
};

/// io_uring_submit_req(struct io_kiocb *req)
pub fn on_submit(ctx: &RawTracePointContext) -> Result<(), i64> {
    let req: u64 = tp_arg(ctx, 0);
    let opcode: u8 = read(req + off!(io_kiocb_opcode))?;
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
        user_data: 0,
    });
    entry.submit(0);
    Ok(())
}
