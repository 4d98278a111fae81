//! Kernel struct field offsets, computed by the agent from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) and handed to the programs as a read-only global, so no
//! layout from one kernel's headers is compiled in.

/// Byte offsets of the fields the programs read. Each name is `<struct>_<field>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_struct_tgid: u32,
    pub task_struct_pid: u32,
    pub task_struct_real_parent: u32,
    pub task_struct_files: u32,
    pub task_struct_cred: u32,
    pub task_struct_loginuid: u32,
    pub task_struct_mm: u32,
    pub task_struct_exit_code: u32,
    /// `task_struct.thread_info.status` (holds `TS_COMPAT` on x86).
    pub task_struct_thread_status: u32,
    pub cred_euid: u32,
    pub files_struct_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_f_inode: u32,
    pub file_f_path_dentry: u32,
    pub file_private_data: u32,
    /// Where an overlayfs file keeps the file it opened on the layer below: at this offset
    /// in the `struct ovl_file` its `private_data` points to (kernels since 6.13), or, when
    /// [`OVL_REALFILE_IS_PRIVATE_DATA`], `private_data` itself.
    pub ovl_file_realfile: u32,
    pub dentry_d_parent: u32,
    pub dentry_d_name_name: u32,
    /// `dentry.d_name.len`.
    pub dentry_d_name_len: u32,
    pub dentry_d_inode: u32,
    pub inode_i_ino: u32,
    /// Seconds of the inode's change time (`i_ctime_sec`, or `tv_sec` of `__i_ctime` or
    /// `i_ctime` on older kernels).
    pub inode_i_ctime_sec: u32,
    pub inode_i_generation: u32,
    pub inode_i_sb: u32,
    pub inode_i_private: u32,
    pub super_block_s_dev: u32,
    pub super_block_s_magic: u32,
    /// Offset of `vfs_inode` inside `proc_inode` (to go from an inode to its `proc_inode`).
    pub proc_inode_vfs_inode: u32,
    pub proc_inode_pid: u32,
    /// `pid.numbers[0].nr`: the pid in the initial namespace.
    pub pid_numbers_nr: u32,
    /// `task_struct.thread_pid`, `pid.level`, `pid.numbers[0].ns`, the size of one
    /// `numbers[]` element (`struct upid`) and `pid_namespace.ns.inum`: a task's own pid
    /// namespace is `thread_pid->numbers[thread_pid->level].ns`.
    pub task_struct_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers_ns: u32,
    pub upid_size: u32,
    pub pid_namespace_ns_inum: u32,
    pub linux_binprm_filename: u32,
    pub mm_struct_arg_start: u32,
    pub mm_struct_arg_end: u32,
    pub io_kiocb_opcode: u32,
    /// `task_struct.fs` and `fs_struct.pwd.dentry`: the working directory's dentry, whose
    /// name stands for the parent of a one-component relative path (the rename prefilter).
    pub task_struct_fs: u32,
    pub fs_struct_pwd_dentry: u32,
    /// `task_struct.stack` and the size of `struct pt_regs`: a task's saved user registers
    /// sit at the top of its kernel stack ([`X86_64_THREAD_SIZE`]), where the hooks that are
    /// not handed them find the syscall's number and arguments.
    pub task_struct_stack: u32,
    pub pt_regs_size: u32,
    /// `task_struct.flags` (`PF_IO_WORKER`).
    pub task_struct_flags: u32,
    pub file_f_flags: u32,
    /// `file.f_path`: the `struct path` `bpf_d_path` takes.
    pub file_f_path: u32,
    /// `filename.name`: the kernel's copy of a path a caller passed (`do_filp_open`).
    pub filename_name: u32,
    /// 1 when the kernel has the `bpf_get_current_task_btf` helper (5.11 and later), 0 when
    /// not (5.10): not an offset, but a load-time constant like them, so the verifier
    /// removes the branch the kernel cannot run before it checks any helper call in it.
    pub has_current_task_btf: u32,
}

/// `THREAD_SIZE` on x86-64 (16 KiB; 32 KiB only with KASAN, which no distribution kernel
/// enables): the user registers a hook finds there are checked to come from user mode.
pub const X86_64_THREAD_SIZE: u64 = 16384;

/// [`KernelOffsets::ovl_file_realfile`] of kernels before `struct ovl_file` (6.13).
pub const OVL_REALFILE_IS_PRIVATE_DATA: u32 = u32::MAX;

impl KernelOffsets {
    /// The value compiled into the eBPF object; the agent overwrites it before loading.
    pub const fn zeroed() -> Self {
        // SAFETY: KernelOffsets is #[repr(C)] with only u32 fields, for which all-zero bytes
        // are a valid value.
        unsafe { core::mem::zeroed() }
    }
}
