//! Reading kernel memory at offsets the agent derived from the running kernel's BTF.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel},
    programs::RawTracePointContext,
    EbpfContext,
};
use sensor_common::syscall::TS_COMPAT;

/// Reads one field of the offsets global; volatile so the compiler cannot fold the
/// compiled-in zero.
macro_rules! off {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(&crate::OFFSETS.$field) as u64 }
    };
}
pub(crate) use off;

#[inline(always)]
pub fn read<T>(addr: u64) -> Result<T, i64> {
    unsafe { bpf_probe_read_kernel(addr as *const T) }.map_err(|e| e as i64)
}

/// Argument `n` of a raw tracepoint (the tracepoint's `TP_PROTO` parameters, in order).
#[inline(always)]
pub fn tp_arg(ctx: &RawTracePointContext, n: usize) -> u64 {
    unsafe { *(ctx.as_ptr() as *const u64).add(n) }
}

#[inline(always)]
pub fn current_task() -> u64 {
    unsafe { bpf_get_current_task() }
}

/// Offsets of the uapi `struct pt_regs` on x86-64: a stable user ABI, not a kernel-internal layout.
mod pt_regs {
    pub const R10: u64 = 7 * 8;
    pub const R8: u64 = 9 * 8;
    pub const BP: u64 = 4 * 8;
    pub const BX: u64 = 5 * 8;
    pub const R9: u64 = 8 * 8;
    pub const CX: u64 = 11 * 8;
    pub const DX: u64 = 12 * 8;
    pub const SI: u64 = 13 * 8;
    pub const DI: u64 = 14 * 8;
    pub const ORIG_AX: u64 = 15 * 8;
}

/// A pointer the verifier knows the BTF type of (a BTF tracepoint argument, the current
/// task, or a struct pointer loaded through one). Fields are read with plain loads, which
/// the verifier turns into fault-safe loads: several times cheaper than a
/// `bpf_probe_read_kernel` call, and this runs on every open. Offsets must be load-time
/// constants (they come from the frozen read-only globals) so the verifier can check each
/// access against BTF.
#[derive(Clone, Copy)]
pub struct BtfPtr(*const u8);

impl BtfPtr {
    #[inline(always)]
    pub fn current_task() -> BtfPtr {
        BtfPtr(unsafe { bpf_get_current_task_btf() } as *const u8)
    }

    #[inline(always)]
    pub fn from_raw(ptr: *const u8) -> BtfPtr {
        BtfPtr(ptr)
    }

    /// The scalar field at `offset` (a load that cannot fail).
    #[inline(always)]
    pub fn get<T: Copy>(self, offset: u64) -> T {
        unsafe { core::ptr::read_volatile(self.0.add(offset as usize) as *const T) }
    }
}

/// A kernel address the verifier sees as a plain number: fields are read with
/// `bpf_probe_read_kernel`.
#[derive(Clone, Copy)]
pub struct RawPtr(pub u64);

impl RawPtr {
    /// The scalar field at `offset`.
    #[inline(always)]
    pub fn load<T: Copy>(self, offset: u64) -> Result<T, i64> {
        read(self.0 + offset)
    }

    /// The pointer field at `offset`.
    #[inline(always)]
    pub fn load_ptr(self, offset: u64) -> Result<RawPtr, i64> {
        read(self.0 + offset).map(RawPtr)
    }
}

#[inline(always)]
pub fn syscall_nr(regs: BtfPtr) -> u64 {
    regs.get(pt_regs::ORIG_AX)
}

/// Whether the current syscall entered through the ia32 compat path (`int 0x80`).
#[inline(always)]
pub fn in_compat_syscall(task: BtfPtr) -> bool {
    let status: u32 = task.get(off!(task_struct_thread_status));
    status & TS_COMPAT != 0
}

/// The six syscall arguments in ABI order.
pub struct SyscallArgs(pub [u64; 6]);

impl SyscallArgs {
    #[inline(always)]
    pub fn read(regs: BtfPtr, compat: bool) -> Self {
        if compat {
            // ia32 arguments are 32-bit; the upper halves of the saved registers are not.
            let r = |o| regs.get::<u64>(o) & 0xffff_ffff;
            SyscallArgs([
                r(pt_regs::BX),
                r(pt_regs::CX),
                r(pt_regs::DX),
                r(pt_regs::SI),
                r(pt_regs::DI),
                r(pt_regs::BP),
            ])
        } else {
            let r = |o| regs.get::<u64>(o);
            SyscallArgs([
                r(pt_regs::DI),
                r(pt_regs::SI),
                r(pt_regs::DX),
                r(pt_regs::R10),
                r(pt_regs::R8),
                r(pt_regs::R9),
            ])
        }
    }
}

/// The `struct file` behind descriptor `fd` of `task`.
#[inline(always)]
pub fn fd_file(task: BtfPtr, fd: u64) -> Result<RawPtr, i64> {
    let files = BtfPtr::from_raw(task.get::<*const u8>(off!(task_struct_files)));
    let fdt = BtfPtr::from_raw(files.get::<*const u8>(off!(files_struct_fdt)));
    let max_fds: u32 = fdt.get(off!(fdtable_max_fds));
    if fd >= max_fds as u64 {
        return Err(-1);
    }
    // `struct file **` is not a struct pointer, so the verifier types it as a number.
    let fds: u64 = fdt.get(off!(fdtable_fd));
    let file: u64 = read(fds + fd * 8)?;
    if file == 0 {
        return Err(-1);
    }
    Ok(RawPtr(file))
}

/// `pid->numbers[0].nr`: the pid number in the initial namespace.
#[inline(always)]
pub fn pid_nr(pid: u64) -> Result<u32, i64> {
    read(pid + off!(pid_numbers_nr))
}
