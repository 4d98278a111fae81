//! Reading kernel memory at offsets the agent derived from the running kernel's BTF.

use core::{
    ffi::{c_long, c_void},
    mem::{size_of, MaybeUninit},
};

use aya_ebpf::{
    helpers::{
        bpf_get_current_task, bpf_get_current_task_btf,
        generated::{
            bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user,
            bpf_probe_read_user_str,
        },
    },
    programs::RawTracePointContext,
    EbpfContext,
};
use sensor_common::{syscall::TS_COMPAT, X86_64_THREAD_SIZE};

/// Reads one field of the offsets global; volatile so the compiler cannot fold the
/// compiled-in zero.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: OFFSETS is a plain-data static that lives for the whole program; a
        // volatile read of one of its fields reads initialised, aligned memory.
        unsafe { core::ptr::read_volatile(&crate::OFFSETS.$field) as u64 }
    };
}
pub(crate) use off;

#[inline(always)]
pub fn read<T>(addr: u64) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel copies into a value of its own and returns an error for
    // an address that does not map; callers only read plain-data `T` (integers, pointers as
    // numbers), for which every bit pattern is valid.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const T) }.map_err(|e| e as i64)
}

/// Argument `n` of a raw tracepoint (the tracepoint's `TP_PROTO` parameters, in order).
#[inline(always)]
pub fn tp_arg(ctx: &RawTracePointContext, n: usize) -> u64 {
    // SAFETY: a raw tracepoint's context is the array of its `TP_PROTO` arguments, one u64
    // each; callers pass an `n` below the tracepoint's argument count, and the verifier
    // refuses the program if a read goes past the context.
    unsafe { *(ctx.as_ptr() as *const u64).add(n) }
}

#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: the helper takes no arguments and only returns the current task's address.
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
    pub const CS: u64 = 17 * 8;
    pub const SS: u64 = 20 * 8;
}

/// The words of x86-64's `struct pt_regs`, `SS` the last.
pub const PT_REGS_WORDS: usize = pt_regs::SS as usize / 8 + 1;
const PT_REGS_BYTES: u32 = (PT_REGS_WORDS * 8) as u32;

/// A pointer the verifier knows the BTF type of (a BTF tracepoint argument, the current
/// task, or a struct pointer loaded through one). Fields are read with plain loads, which
/// the verifier turns into fault-safe loads: several times cheaper than a
/// `bpf_probe_read_kernel` call, and this runs on every open. Offsets must be load-time
/// constants (they come from the frozen read-only globals) so the verifier can check each
/// access against BTF.
///
/// A kernel without `bpf_get_current_task_btf` (5.10) has no typed current task, the root
/// of most of these pointers: there every field is read with `bpf_probe_read_kernel`. The
/// choice is a load-time constant ([`typed_task`]), so each kernel's verifier checks, and
/// keeps, one of the two.
#[derive(Clone, Copy)]
pub struct BtfPtr(*const u8);

/// Whether the kernel has `bpf_get_current_task_btf` (see [`BtfPtr`]).
#[inline(always)]
fn typed_task() -> bool {
    off!(has_current_task_btf) != 0
}

impl BtfPtr {
    #[inline(always)]
    pub fn current_task() -> BtfPtr {
        if typed_task() {
            // SAFETY: the helper takes no arguments; the verifier tracks its result as a BTF
            // pointer to the current task, which lives for the whole program run.
            BtfPtr(unsafe { bpf_get_current_task_btf() } as *const u8)
        } else {
            BtfPtr(current_task() as *const u8)
        }
    }

    #[inline(always)]
    pub fn from_raw(ptr: *const u8) -> BtfPtr {
        BtfPtr(ptr)
    }

    /// The address of the member at `offset`, still typed for the verifier (a helper's
    /// BTF argument).
    #[inline(always)]
    pub fn field_ptr(self, offset: u64) -> *const u8 {
        // SAFETY: only an address is computed; nothing is read through it here.
        unsafe { self.0.add(offset as usize) }
    }

    /// The scalar field at `offset`; one that cannot be read reads as 0, as a typed load of
    /// an unmapped address does.
    #[inline(always)]
    pub fn get<T: Copy>(self, offset: u64) -> T {
        if typed_task() {
            return self.load(offset);
        }
        let mut v = MaybeUninit::<T>::uninit();
        // SAFETY: `v` is writable for `size_of::<T>()` bytes, the size passed; the helper
        // reads kernel memory fault-safely and zeroes `v` when it cannot, so `v` is
        // initialised either way (no branch on the result: the verifier would otherwise
        // follow both outcomes of every read); callers read integers or pointers, for
        // which every bit pattern is valid.
        unsafe {
            bpf_probe_read_kernel(
                v.as_mut_ptr().cast(),
                size_of::<T>() as u32,
                self.0.add(offset as usize).cast(),
            );
            v.assume_init()
        }
    }

    /// The scalar field at `offset`, with a plain load whatever the kernel: for pointers
    /// that are typed on every kernel (a hook's arguments).
    #[inline(always)]
    fn load<T: Copy>(self, offset: u64) -> T {
        // SAFETY: the verifier checks this load against the BTF type of the pointer and the
        // constant offset, and turns it into a fault-safe load; callers read integers or
        // pointers, for which every bit pattern is valid.
        unsafe { core::ptr::read_volatile(self.0.add(offset as usize) as *const T) }
    }

    /// The pointer field at `offset`, still a [`BtfPtr`].
    #[inline(always)]
    pub fn get_ptr(self, offset: u64) -> BtfPtr {
        BtfPtr(self.get::<usize>(offset) as *const u8)
    }
}

/// A pointer to a kernel structure whose fields are read at offsets from [`off!`]: code
/// that walks a file's inode, dentry and superblock is written once for the pointers a hook
/// is handed typed ([`ArgPtr`]) and those it finds as numbers ([`RawPtr`]).
pub trait FieldPtr: Copy {
    /// The scalar field at `offset`.
    fn load<T: Copy>(self, offset: u64) -> Result<T, i64>;
    /// The pointer field at `offset`, of the same kind.
    fn load_ptr(self, offset: u64) -> Result<Self, i64>;
    /// The address, for arithmetic (`container_of`) and for the reads that stay raw.
    fn raw(self) -> RawPtr;
}

/// A kernel address the verifier sees as a plain number: fields are read with
/// `bpf_probe_read_kernel`.
#[derive(Clone, Copy)]
pub struct RawPtr(pub u64);

impl FieldPtr for RawPtr {
    #[inline(always)]
    fn load<T: Copy>(self, offset: u64) -> Result<T, i64> {
        read(self.0 + offset)
    }

    #[inline(always)]
    fn load_ptr(self, offset: u64) -> Result<RawPtr, i64> {
        read(self.0 + offset).map(RawPtr)
    }

    #[inline(always)]
    fn raw(self) -> RawPtr {
        self
    }
}

/// A struct pointer an LSM or fentry/fexit hook was handed, or one loaded through it: typed
/// on every kernel that loads those hooks (unlike [`BtfPtr`]'s current task), so every
/// field is a plain load, which the verifier checks against BTF and makes fault-safe (a
/// NULL or unmapped pointer reads as 0). The hooks that see every open classify the file
/// with these instead of a `bpf_probe_read_kernel` call per field.
#[derive(Clone, Copy)]
pub struct ArgPtr(*const u8);

impl ArgPtr {
    /// `ptr` must be a hook's typed struct pointer argument (the verifier refuses the
    /// program's loads otherwise).
    #[inline(always)]
    pub fn from_arg(ptr: *const u8) -> ArgPtr {
        ArgPtr(ptr)
    }

    /// The same pointer, for the helpers that take a typed pointer.
    #[inline(always)]
    pub fn typed(self) -> BtfPtr {
        BtfPtr(self.0)
    }
}

impl FieldPtr for ArgPtr {
    #[inline(always)]
    fn load<T: Copy>(self, offset: u64) -> Result<T, i64> {
        Ok(BtfPtr(self.0).load(offset))
    }

    #[inline(always)]
    fn load_ptr(self, offset: u64) -> Result<ArgPtr, i64> {
        Ok(ArgPtr(BtfPtr(self.0).load::<usize>(offset) as *const u8))
    }

    #[inline(always)]
    fn raw(self) -> RawPtr {
        RawPtr(self.0 as u64)
    }
}

/// A syscall's saved user registers: handed to `sys_exit` as a typed pointer ([`BtfPtr`]),
/// found by the other hooks at the top of the task's kernel stack ([`StackRegs`]).
pub trait Regs: Copy {
    /// The register saved at `offset` (a [`pt_regs`] constant).
    fn reg(self, offset: u64) -> u64;
}

/// The registers a hook is handed (`sys_exit`, the syscalls' fexit programs): typed on every
/// kernel.
impl Regs for BtfPtr {
    #[inline(always)]
    fn reg(self, offset: u64) -> u64 {
        self.load(offset)
    }
}

/// [`Regs`] copied from the top of a task's kernel stack into this CPU's
/// [`USER_REGS`](crate::USER_REGS) slot.
#[derive(Clone, Copy)]
pub struct StackRegs(*const [u64; PT_REGS_WORDS]);

impl Regs for StackRegs {
    #[inline(always)]
    fn reg(self, offset: u64) -> u64 {
        // SAFETY: the slot is a per-CPU map value of PT_REGS_WORDS words, valid for the
        // whole program run, and every `pt_regs` offset is a word inside it.
        unsafe { core::ptr::read_volatile(self.0.cast::<u8>().add(offset as usize).cast()) }
    }
}

/// The user registers `task`'s current syscall saved on entry (`task_pt_regs`), or `None`
/// when what is there was not saved from user mode: a kernel thread, an io_uring worker,
/// or a stack of another size than [`X86_64_THREAD_SIZE`]. Kernels built for FRED leave 16
/// bytes above them (`TOP_OF_KERNEL_STACK_PADDING`), the others none: the one whose code and
/// stack segments are user-mode ones (requested privilege level 3) is taken.
#[inline(always)]
pub fn user_regs(task: BtfPtr) -> Option<StackRegs> {
    let stack: u64 = task.get(off!(task_struct_stack));
    if stack == 0 {
        return None;
    }
    let slot = crate::USER_REGS.get_ptr_mut(0)?;
    let top = stack + X86_64_THREAD_SIZE - off!(pt_regs_size);
    saved_by_user(slot, top).or_else(|| saved_by_user(slot, top - 16))
}

/// The registers at `at`, copied into `slot`, if they were saved from user mode.
#[inline(always)]
fn saved_by_user(slot: *mut [u64; PT_REGS_WORDS], at: u64) -> Option<StackRegs> {
    // SAFETY: `slot` is this CPU's map value, writable for its PT_REGS_WORDS words, the size
    // passed; the helper reads kernel memory fault-safely (zeroing `slot` on failure, which
    // the user-mode check below refuses).
    let ret = unsafe { bpf_probe_read_kernel(slot.cast(), PT_REGS_BYTES, at as *const c_void) };
    let regs = StackRegs(slot);
    (ret == 0 && regs.reg(pt_regs::CS) & 3 == 3 && regs.reg(pt_regs::SS) & 3 == 3).then_some(regs)
}

#[inline(always)]
pub fn syscall_nr(regs: impl Regs) -> u64 {
    regs.reg(pt_regs::ORIG_AX)
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
    pub fn read(regs: impl Regs, compat: bool) -> Self {
        if compat {
            // ia32 arguments are 32-bit; the upper halves of the saved registers are not.
            let r = |o| regs.reg(o) & 0xffff_ffff;
            SyscallArgs([
                r(pt_regs::BX),
                r(pt_regs::CX),
                r(pt_regs::DX),
                r(pt_regs::SI),
                r(pt_regs::DI),
                r(pt_regs::BP),
            ])
        } else {
            let r = |o| regs.reg(o);
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

/// Copies the NUL-terminated user string at `src` into the `N` bytes at `dst`, through a raw
/// pointer so that `dst` may be uninitialised ring-buffer memory. Returns the length copied,
/// NUL included (truncated to `N`); on failure the kernel zeroes `dst`.
///
/// # Safety
/// `dst` must be valid for writes of `N` bytes.
#[inline(always)]
pub unsafe fn read_user_str<const N: usize>(dst: *mut [u8; N], src: u64) -> Result<usize, i64> {
    // SAFETY: the caller guarantees `dst` is writable for `N` bytes, the size passed; the
    // helper reads user memory fault-safely and never writes past `N`.
    str_len(unsafe { bpf_probe_read_user_str(dst.cast(), N as u32, src as *const c_void) })
}

/// [`read_user_str`] for a kernel string.
///
/// # Safety
/// `dst` must be valid for writes of `N` bytes.
#[inline(always)]
pub unsafe fn read_kernel_str<const N: usize>(dst: *mut [u8; N], src: u64) -> Result<usize, i64> {
    // SAFETY: as in `read_user_str`, for kernel memory.
    str_len(unsafe { bpf_probe_read_kernel_str(dst.cast(), N as u32, src as *const c_void) })
}

/// The result of a `bpf_probe_read_*_str` helper: a length, or the negative error.
#[inline(always)]
fn str_len(ret: c_long) -> Result<usize, i64> {
    if ret < 0 {
        Err(ret)
    } else {
        Ok(ret as usize)
    }
}

/// Copies `len` bytes of user memory at `src` into `dst`, through a raw pointer so that `dst`
/// may be uninitialised ring-buffer memory; on failure the kernel zeroes the `len` bytes.
///
/// # Safety
/// `dst` must be valid for writes of `N` bytes, and `len <= N`.
#[inline(always)]
pub unsafe fn read_user_buf<const N: usize>(
    dst: *mut [u8; N],
    len: usize,
    src: u64,
) -> Result<(), i64> {
    // SAFETY: the caller guarantees `dst` is writable for `len <= N` bytes; the helper reads
    // user memory fault-safely.
    match unsafe { bpf_probe_read_user(dst.cast(), len as u32, src as *const c_void) } {
        0 => Ok(()),
        e => Err(e),
    }
}

/// The `struct file` behind descriptor `fd` of `task`.
#[inline(always)]
pub fn fd_file(task: BtfPtr, fd: u64) -> Result<RawPtr, i64> {
    let files = task.get_ptr(off!(task_struct_files));
    let fdt = files.get_ptr(off!(files_struct_fdt));
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

/// Whether `pid` (a pid argument, as the kernel sees it) names the caller itself: its tgid
/// or its tid. A caller in another pid namespace is told apart in user space.
#[inline(always)]
pub fn is_current(pid: u32) -> bool {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    pid == (pid_tgid >> 32) as u32 || pid == pid_tgid as u32
}

/// `pid->numbers[0].nr`: the pid number in the initial namespace.
#[inline(always)]
pub fn pid_nr(pid: u64) -> Result<u32, i64> {
    read(pid + off!(pid_numbers_nr))
}

/// Deepest pid-namespace level a kernel allows (`MAX_PID_NS_LEVEL`).
const MAX_PID_NS_LEVEL: u32 = 32;

/// The inode number of `task`'s own pid namespace (`task_active_pid_ns`).
#[inline(always)]
pub fn pid_ns(task: u64) -> Result<u32, i64> {
    let pid: u64 = read(task + off!(task_struct_thread_pid))?;
    let level: u32 = read(pid + off!(pid_level))?;
    if level > MAX_PID_NS_LEVEL {
        return Err(0);
    }
    let ns: u64 = read(pid + off!(pid_numbers_ns) + u64::from(level) * off!(upid_size))?;
    read(ns + off!(pid_namespace_ns_inum))
}
