//! Kernel struct offsets from the running kernel's BTF, so no layout of one kernel's headers
//! is compiled into the probes.

use std::path::Path;

use btf_rs::{Btf, Type};
use sensor_common::{KernelOffsets, OVL_REALFILE_IS_PRIVATE_DATA};

use crate::Error;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// The overlayfs module's BTF, present while the module is loaded.
const OVERLAY_BTF: &str = "/sys/kernel/btf/overlay";
/// The first kernel release with `struct ovl_file`, whose `realfile` is its first member.
const OVL_FILE_SINCE: (u32, u32) = (6, 13);

/// Reads every offset the programs need from `path` (normally [`VMLINUX_BTF`]).
pub fn from_btf(path: &Path) -> Result<KernelOffsets, Error> {
    if !path.exists() {
        return Err(Error::NoBtf);
    }
    let btf = Btf::from_file(path).map_err(|e| Error::Btf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let r = Resolver { btf: &btf };
    let proc_inode = r.offset("proc_inode", &["vfs_inode"]);
    Ok(KernelOffsets {
        task_struct_tgid: r.offset("task_struct", &["tgid"])?,
        task_struct_pid: r.offset("task_struct", &["pid"])?,
        task_struct_real_parent: r.offset("task_struct", &["real_parent"])?,
        task_struct_files: r.offset("task_struct", &["files"])?,
        task_struct_cred: r.offset("task_struct", &["cred"])?,
        task_struct_loginuid: r.offset("task_struct", &["loginuid"]).map_err(|_| {
            Error::MissingKernelField {
                what: "task_struct.loginuid".into(),
                hint: "the kernel lacks CONFIG_AUDIT, so login uids cannot be reported",
            }
        })?,
        task_struct_mm: r.offset("task_struct", &["mm"])?,
        task_struct_exit_code: r.offset("task_struct", &["exit_code"])?,
        task_struct_thread_status: r.offset("task_struct", &["thread_info", "status"])?,
        cred_euid: r.offset("cred", &["euid"])?,
        files_struct_fdt: r.offset("files_struct", &["fdt"])?,
        fdtable_max_fds: r.offset("fdtable", &["max_fds"])?,
        fdtable_fd: r.offset("fdtable", &["fd"])?,
        file_f_inode: r.offset("file", &["f_inode"])?,
        file_f_path_dentry: r.offset("file", &["f_path", "dentry"])?,
        file_private_data: r.offset("file", &["private_data"])?,
        ovl_file_realfile: ovl_file_realfile(&btf, Path::new(OVERLAY_BTF), &os_release())?,
        dentry_d_parent: r.offset("dentry", &["d_parent"])?,
        dentry_d_name_name: r.offset("dentry", &["d_name", "name"])?,
        dentry_d_name_len: r.offset("dentry", &["d_name", "len"])?,
        dentry_d_inode: r.offset("dentry", &["d_inode"])?,
        inode_i_ino: r.offset("inode", &["i_ino"])?,
        inode_i_ctime_sec: r
            .offset("inode", &["i_ctime_sec"])
            .or_else(|_| r.offset("inode", &["__i_ctime", "tv_sec"]))
            .or_else(|_| r.offset("inode", &["i_ctime", "tv_sec"]))?,
        inode_i_generation: r.offset("inode", &["i_generation"])?,
        inode_i_sb: r.offset("inode", &["i_sb"])?,
        inode_i_private: r.offset("inode", &["i_private"])?,
        super_block_s_dev: r.offset("super_block", &["s_dev"])?,
        super_block_s_magic: r.offset("super_block", &["s_magic"])?,
        proc_inode_vfs_inode: proc_inode?,
        proc_inode_pid: r.offset("proc_inode", &["pid"])?,
        pid_numbers_nr: r.offset("pid", &["numbers", "nr"])?,
        task_struct_thread_pid: r.offset("task_struct", &["thread_pid"])?,
        pid_level: r.offset("pid", &["level"])?,
        pid_numbers_ns: r.offset("pid", &["numbers", "ns"])?,
        upid_size: r.size("upid")?,
        pid_namespace_ns_inum: r.offset("pid_namespace", &["ns", "inum"])?,
        linux_binprm_filename: r.offset("linux_binprm", &["filename"])?,
        mm_struct_arg_start: r.offset("mm_struct", &["arg_start"])?,
        mm_struct_arg_end: r.offset("mm_struct", &["arg_end"])?,
        io_kiocb_opcode: r.offset("io_kiocb", &["opcode"])?,
        task_struct_fs: r.offset("task_struct", &["fs"])?,
        fs_struct_pwd_dentry: r.offset("fs_struct", &["pwd", "dentry"])?,
        task_struct_stack: r.offset("task_struct", &["stack"])?,
        pt_regs_size: r.size("pt_regs")?,
        task_struct_flags: r.offset("task_struct", &["flags"])?,
        file_f_flags: r.offset("file", &["f_flags"])?,
        file_f_path: r.offset("file", &["f_path"])?,
        filename_name: r.offset("filename", &["name"])?,
        has_current_task_btf: r.has_helper("BPF_FUNC_get_current_task_btf").into(),
    })
}

/// Where an overlayfs file keeps the file it opened below: `ovl_file.realfile` from the
/// kernel's BTF, or from the overlay module's when the module is loaded. Without either (a
/// module not loaded yet when the agent starts) the release decides, as the member has been
/// first since `struct ovl_file` came.
fn ovl_file_realfile(vmlinux: &Btf, module: &Path, release: &str) -> Result<u32, Error> {
    if (Resolver { btf: vmlinux }).has_struct("ovl_file") {
        return (Resolver { btf: vmlinux }).offset("ovl_file", &["realfile"]);
    }
    if let Ok(split) = Btf::from_split_file(module, vmlinux) {
        let r = Resolver { btf: &split };
        if r.has_struct("ovl_file") {
            return r.offset("ovl_file", &["realfile"]);
        }
        return Ok(OVL_REALFILE_IS_PRIVATE_DATA);
    }
    Ok(ovl_file_realfile_by_release(release))
}

/// [`ovl_file_realfile`] without BTF: a release that cannot be read is taken as recent.
fn ovl_file_realfile_by_release(release: &str) -> u32 {
    match release_number(release) {
        Some(v) if v < OVL_FILE_SINCE => OVL_REALFILE_IS_PRIVATE_DATA,
        _ => 0,
    }
}

fn os_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default()
}

/// `(6, 13)` of `6.13.0-1-amd64`.
fn release_number(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether raw tracepoint `name`'s first arguments (after the context) have the types
/// `params` in the running kernel, each as C spells it (`struct io_kiocb *`, `void *`,
/// `u8`): a tracepoint can keep its name and change what it is handed
/// (`io_uring_submit_sqe` took the ring and the opcode, then the request).
pub fn tracepoint_takes(name: &str, params: &[&str]) -> bool {
    // `btf_trace_<name>`: a typedef of a pointer to the probe's prototype, whose first
    // parameter is the `void *` context.
    prototype(&format!("btf_trace_{name}"), |btf, t| {
        let Type::Typedef(typedef) = t else {
            return None;
        };
        let Type::Ptr(ptr) = btf.resolve_chained_type(typedef).ok()? else {
            return None;
        };
        btf.resolve_chained_type(&ptr).ok()
    })
    .is_some_and(|have| {
        have.len() > params.len()
            && params
                .iter()
                .zip(&have[1..])
                .all(|(want, have)| want == have)
    })
}

/// Whether kernel function `name` takes exactly the parameters `params` in the running
/// kernel, spelt as for [`tracepoint_takes`]: an fexit program reads its result after them.
pub fn function_takes(name: &str, params: &[&str]) -> bool {
    prototype(name, |btf, t| match t {
        Type::Func(func) => btf.resolve_chained_type(func).ok(),
        _ => None,
    })
    .is_some_and(|have| have == params)
}

/// The parameter types, as C spells them, of the prototype that `to_proto` finds from a
/// BTF type named `name` of the running kernel.
fn prototype(name: &str, to_proto: impl Fn(&Btf, &Type) -> Option<Type>) -> Option<Vec<String>> {
    let btf = Btf::from_file(VMLINUX_BTF).ok()?;
    let Type::FuncProto(proto) = btf
        .resolve_types_by_name(name)
        .ok()?
        .iter()
        .find_map(|t| to_proto(&btf, t))?
    else {
        return None;
    };
    proto
        .parameters
        .iter()
        .map(|p| c_type(&btf, btf.resolve_chained_type(p).ok()?))
        .collect()
}

/// `ty` as C spells it, qualifiers left out; `None` for a kind a prototype check never
/// names.
fn c_type(btf: &Btf, ty: Type) -> Option<String> {
    let named = |t: &dyn btf_rs::BtfType| btf.resolve_name(t).ok();
    Some(match &ty {
        Type::Void => "void".into(),
        Type::Int(t) => named(t)?,
        Type::Typedef(t) => named(t)?,
        Type::Struct(t) => format!("struct {}", named(t)?),
        Type::Ptr(t) => format!("{} *", c_type(btf, btf.resolve_chained_type(t).ok()?)?),
        Type::Const(t) => c_type(btf, btf.resolve_chained_type(t).ok()?)?,
        Type::Volatile(t) => c_type(btf, btf.resolve_chained_type(t).ok()?)?,
        _ => return None,
    })
}

fn missing(strukt: &str, field: &str, reason: String) -> Error {
    Error::MissingKernelField {
        what: format!("{strukt}.{field} ({reason})"),
        hint: "this kernel's layout is not supported yet; please report it with `uname -r`",
    }
}

struct Resolver<'a> {
    btf: &'a Btf,
}

impl Resolver<'_> {
    /// Byte offset of `path` (nested members, arrays stepping into element 0) in `strukt`.
    fn offset(&self, strukt: &str, path: &[&str]) -> Result<u32, Error> {
        let field = path.join(".");
        let missing = |reason: String| missing(strukt, &field, reason);
        let mut ty = self.find_struct(strukt, &field)?;
        let mut bits = 0u32;
        for field in path {
            let composite = self.strip(ty).map_err(|e| missing(e.to_string()))?;
            let (member_bits, member_ty) = self
                .find_member(&composite, field)
                .map_err(|e| missing(e.to_string()))?
                .ok_or_else(|| missing(format!("no member `{field}`")))?;
            bits += member_bits;
            ty = member_ty;
        }
        if !bits.is_multiple_of(8) {
            return Err(missing("member is a bit field".into()));
        }
        Ok(bits / 8)
    }

    /// Whether the kernel implements BPF helper `id` (a member of its `enum bpf_func_id`).
    fn has_helper(&self, id: &str) -> bool {
        let Ok(types) = self.btf.resolve_types_by_name("bpf_func_id") else {
            return false;
        };
        types.iter().any(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .any(|m| self.btf.resolve_name(m).is_ok_and(|n| n == id)),
            _ => false,
        })
    }

    fn has_struct(&self, strukt: &str) -> bool {
        self.find_struct(strukt, "(any)").is_ok()
    }

    /// The size in bytes of `struct strukt`.
    fn size(&self, strukt: &str) -> Result<u32, Error> {
        match self.find_struct(strukt, "(size)")? {
            Type::Struct(s) => u32::try_from(s.size())
                .map_err(|_| missing(strukt, "(size)", "larger than 4 GiB".into())),
            _ => Err(missing(strukt, "(size)", "not a struct".into())),
        }
    }

    /// The definition (not a forward declaration) of `struct strukt`.
    fn find_struct(&self, strukt: &str, field: &str) -> Result<Type, Error> {
        self.btf
            .resolve_types_by_name(strukt)
            .map_err(|e| missing(strukt, field, e.to_string()))?
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
            .ok_or_else(|| missing(strukt, field, "struct not found".into()))
    }

    /// Looks through typedefs, qualifiers and arrays (element 0) to the underlying type.
    fn strip(&self, mut ty: Type) -> btf_rs::Result<Type> {
        loop {
            ty = match &ty {
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_)
                | Type::Array(_) => self
                    .btf
                    .resolve_chained_type(ty.as_btf_type().expect("chained type"))?,
                _ => return Ok(ty),
            };
        }
    }

    /// Finds `name` among the members of a struct or union, descending into anonymous
    /// members; returns its bit offset and type.
    fn find_member(&self, ty: &Type, name: &str) -> btf_rs::Result<Option<(u32, Type)>> {
        let (Type::Struct(s) | Type::Union(s)) = ty else {
            return Ok(None);
        };
        for member in &s.members {
            let member_name = self.btf.resolve_name(member).unwrap_or_default();
            let member_ty = self.btf.resolve_chained_type(member)?;
            if member_name == name {
                return Ok(Some((member.bit_offset(), member_ty)));
            }
            if member_name.is_empty() {
                let inner = self.strip(member_ty)?;
                if let Some((bits, t)) = self.find_member(&inner, name)? {
                    return Ok(Some((member.bit_offset() + bits, t)));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's tracepoint prototypes, from its BTF.
    #[test]
    fn what_a_tracepoint_is_handed() {
        // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
        let exec = |params: &[&str]| tracepoint_takes("sched_process_exec", params);
        assert!(exec(&["struct task_struct *"]));
        assert!(exec(&[
            "struct task_struct *",
            "pid_t",
            "struct linux_binprm *"
        ]));
        assert!(!exec(&["struct io_kiocb *"]));
        assert!(!exec(&["struct task_struct *", "u8"]));
        assert!(!exec(&[
            "struct task_struct *",
            "pid_t",
            "struct linux_binprm *",
            "int"
        ]));
        // sys_exit(struct pt_regs *regs, long ret)
        assert!(tracepoint_takes(
            "sys_exit",
            &["struct pt_regs *", "long int"]
        ));
        assert!(!tracepoint_takes("no_such_tracepoint", &[]));
    }

    /// The running kernel's function prototypes, from its BTF: all parameters, exactly.
    #[test]
    fn what_a_function_takes() {
        // do_filp_open(int dfd, struct filename *pathname, const struct open_flags *op)
        let filp = ["int", "struct filename *", "struct open_flags *"];
        assert!(function_takes("do_filp_open", &filp));
        assert!(!function_takes("do_filp_open", &filp[..2]));
        assert!(!function_takes(
            "do_filp_open",
            &[&filp[..], &["int"]].concat()
        ));
        assert!(!function_takes("no_such_function", &[]));
        // Two prototypes over the kernels the agent supports: one of them is this kernel's.
        let by_path = ["struct path *", "char *", "struct open_flags *"];
        let by_dentry = [
            "struct dentry *",
            "struct vfsmount *",
            "char *",
            "struct open_flags *",
        ];
        assert!(
            function_takes("do_file_open_root", &by_path)
                != function_takes("do_file_open_root", &by_dentry)
        );
    }

    /// Reads the real BTF of the kernel the tests run on.
    #[test]
    fn offsets_of_the_running_kernel() {
        let o = from_btf(Path::new(VMLINUX_BTF)).expect("this kernel has BTF");
        // Layouts that are stable enough to pin: thread_info is first in task_struct on x86
        // and status follows flags and syscall_work; qstr.name follows the 8-byte hash_len.
        assert_eq!(o.task_struct_thread_status, 16);
        assert_eq!(o.dentry_d_name_name % 8, 0);
        assert!(o.task_struct_tgid > 0 && o.task_struct_files > o.task_struct_tgid);
        assert!(o.proc_inode_vfs_inode > o.proc_inode_pid);
    }

    /// Helpers are told from the kernel's own `enum bpf_func_id`; this kernel (6.18) has the
    /// typed current task, Debian 11's 5.10 does not (checked in the VM lane).
    #[test]
    fn helpers_of_the_running_kernel() {
        let btf = Btf::from_file(VMLINUX_BTF).expect("this kernel has BTF");
        let r = Resolver { btf: &btf };
        assert!(r.has_helper("BPF_FUNC_get_current_task_btf"));
        assert!(r.has_helper("BPF_FUNC_ringbuf_reserve"));
        assert!(!r.has_helper("BPF_FUNC_no_such_helper"));
        assert!(!r.has_helper("bpf_func_id"));
    }

    /// This kernel (6.18) has `struct ovl_file`; kernels without BTF for overlayfs are judged
    /// by their release.
    #[test]
    fn overlay_real_file_is_found_per_kernel() {
        let btf = Btf::from_file(VMLINUX_BTF).expect("this kernel has BTF");
        assert_eq!(
            ovl_file_realfile(&btf, Path::new(OVERLAY_BTF), &os_release()).unwrap(),
            0
        );
        let by_release = ovl_file_realfile_by_release;
        assert_eq!(by_release("6.1.0-37-amd64"), OVL_REALFILE_IS_PRIVATE_DATA);
        assert_eq!(
            by_release("6.12.48+deb13-amd64"),
            OVL_REALFILE_IS_PRIVATE_DATA
        );
        assert_eq!(by_release("6.13.0"), 0);
        assert_eq!(release_number("6.18.44-fc-v973"), Some((6, 18)));
        assert_eq!(release_number("garbage"), None);
    }

    #[test]
    fn missing_btf_is_one_clear_sentence() {
        let err = from_btf(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
