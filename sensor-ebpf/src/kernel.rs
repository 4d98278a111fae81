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

/// A kernel pointer whose fields the programs read. Two kinds exist, so that the same code
/// (see `file::classify`) runs on either.
pub trait KernelPtr: Copy {
    /// The scalar field at `offset`.
    fn load<T: Copy>(self, offset: u64) -> Result<T, i64>;
    /// The struct pointer field at `offset`.
    fn load_ptr(self, offset: u64) -> Result<Self, i64>;
    /// The address, for helpers that take any kernel address.
    fn addr(self) -> u64;
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

    /// The address of the field at `offset`, still typed for the verifier.
    #[inline(always)]
    pub fn get_addr(self, offset: u64) -> *const u8 {
        unsafe { self.0.add(offset as usize) }
    }

    /// The scalar field at `offset` (a load that cannot fail).
    #[inline(always)]
    pub fn get<T: Copy>(self, offset: u64) -> T {
        unsafe { core::ptr::read_volatile(self.0.add(offset as usize) as *const T) }
    }
}

impl KernelPtr for BtfPtr {
    #[inline(always)]
    fn load<T: Copy>(self, offset: u64) -> Result<T, i64> {
        Ok(self.get(offset))
    }

    #[inline(always)]
    fn load_ptr(self, offset: u64) -> Result<BtfPtr, i64> {
        Ok(BtfPtr(self.get::<*const u8>(offset)))
    }

    #[inline(always)]
    fn addr(self) -> u64 {
        self.0 as u64
    }
}

/// A kernel address the verifier sees as a plain number: fields are read with
/// `bpf_probe_read_kernel`.
#[derive(Clone, Copy)]
pub struct RawPtr(pub u64);

impl KernelPtr for RawPtr {
    #[inline(always)]
    fn load<T: Copy>(self, offset: u64) -> Result<T, i64> {
        read(self.0 + offset)
    }

    #[inline(always)]
    fn load_ptr(self, offset: u64) -> Result<RawPtr, i64> {
        read(self.0 + offset).map(RawPtr)
    }

    #[inline(always)]
    fn addr(self) -> u64 {
        self.0
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

/// Length of `files_struct.fd_array` (`NR_OPEN_DEFAULT`), checked by the agent at load.
pub const FD_ARRAY_LEN: u64 = 64;

/// The `struct file` behind descriptor `fd` of `task`, as a typed pointer when the table
/// is still the one embedded in `files_struct` (`fd_array`, the first 64 descriptors of a
/// process that never needed more): most opens, at the cost of plain loads only.
#[inline(always)]
pub fn fd_file_btf(task: BtfPtr, fd: u64) -> Option<BtfPtr> {
    let files = task.get::<*const u8>(off!(task_struct_files));
    let files = BtfPtr::from_raw(files);
    let fdt = BtfPtr::from_raw(files.get::<*const u8>(off!(files_struct_fdt)));
    let array = off!(files_struct_fd_array);
    let fds: u64 = fdt.get(off!(fdtable_fd));
    if fd >= FD_ARRAY_LEN || fds != files.addr() + array {
        return None;
    }
    // The verifier accepts only constant offsets into a typed struct, so each index gets
    // its own constant, added in assembly where the compiler cannot merge the branches back
    // into `fd * 8`.
    let base = files.get_addr(array);
    macro_rules! slot {
        ($($i:literal)*) => {
            match fd {
                $($i => {
                    let mut slot = base;
                    unsafe { core::arch::asm!("{0} += {1}", inout(reg) slot, const $i * 8) };
                    slot
                })*
                _ => return None,
            }
        };
    }
    let slot = slot!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27
        28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56
        57 58 59 60 61 62 63);
    let file = unsafe { core::ptr::read_volatile(slot as *const *const u8) };
    (!file.is_null()).then(|| BtfPtr::from_raw(file))
}

/// The `struct file` behind descriptor `fd` of `task`, through the current fd table.
#[inline(always)]
pub fn fd_file(task: BtfPtr, fd: u64) -> Result<RawPtr, i64> {
    let fdt = BtfPtr::from_raw(task.get::<*const u8>(off!(task_struct_files)))
        .load_ptr(off!(files_struct_fdt))?;
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
