//! Names of the numbers in kernel events: open flags, `ptrace` requests, `keyctl`
//! operations, `bpf` commands, program and attach types, `perf_event_attr` types and sample
//! bits, fanotify masks and mark flags, resource limits.

use std::path::Path;

/// `read`, `write`, `read-write`, or `path` for `O_PATH` (no data access).
pub fn access(flags: u64) -> &'static str {
    if flags & libc::O_PATH as u64 != 0 {
        return "path";
    }
    match flags & libc::O_ACCMODE as u64 {
        0 => "read",
        1 => "write",
        _ => "read-write",
    }
}

/// Open flags, symbolic (`O_RDONLY|O_CLOEXEC`); unknown bits as hex.
pub fn open_flags(flags: u64) -> String {
    const NAMED: [(i32, &str); 15] = [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        // O_SYNC includes O_DSYNC's bit, so it is tested first.
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_ASYNC, "O_ASYNC"),
        (libc::O_DIRECT, "O_DIRECT"),
        // The kernel's value: glibc defines O_LARGEFILE as 0 on 64-bit targets.
        (0o100000, "O_LARGEFILE"),
        // O_TMPFILE includes O_DIRECTORY's bit, so it is tested first.
        (libc::O_TMPFILE, "O_TMPFILE"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_NOATIME, "O_NOATIME"),
    ];
    let mut rest = flags;
    let mut out = String::with_capacity(32);
    if flags & libc::O_PATH as u64 != 0 {
        out.push_str("O_PATH");
        rest &= !(libc::O_PATH as u64 | libc::O_ACCMODE as u64);
    } else {
        out.push_str(match flags & libc::O_ACCMODE as u64 {
            0 => "O_RDONLY",
            1 => "O_WRONLY",
            2 => "O_RDWR",
            _ => "O_ACCMODE",
        });
        rest &= !(libc::O_ACCMODE as u64);
    }
    for (bits, name) in NAMED.iter().chain(&[(libc::O_CLOEXEC, "O_CLOEXEC")]) {
        let bits = *bits as u64;
        if rest & bits == bits {
            out.push('|');
            out.push_str(name);
            rest &= !bits;
        }
    }
    if rest != 0 {
        out.push_str(&format!("|{rest:#x}"));
    }
    out
}

/// The name of a signal that dumps core (`syscall::CORE_SIGNALS`), `signal N` for another.
pub fn core_signal(sig: u64) -> String {
    let name = match sig as i32 {
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

pub const PTRACE_TRACEME: u64 = 0;

/// `PTRACE_*` name of a request (x86-64 numbering).
pub fn ptrace_request(request: u64) -> String {
    let name = match request {
        0 => "PTRACE_TRACEME",
        1 => "PTRACE_PEEKTEXT",
        2 => "PTRACE_PEEKDATA",
        3 => "PTRACE_PEEKUSER",
        4 => "PTRACE_POKETEXT",
        5 => "PTRACE_POKEDATA",
        6 => "PTRACE_POKEUSER",
        7 => "PTRACE_CONT",
        8 => "PTRACE_KILL",
        9 => "PTRACE_SINGLESTEP",
        12 => "PTRACE_GETREGS",
        13 => "PTRACE_SETREGS",
        14 => "PTRACE_GETFPREGS",
        15 => "PTRACE_SETFPREGS",
        16 => "PTRACE_ATTACH",
        17 => "PTRACE_DETACH",
        18 => "PTRACE_GETFPXREGS",
        19 => "PTRACE_SETFPXREGS",
        24 => "PTRACE_SYSCALL",
        25 => "PTRACE_GET_THREAD_AREA",
        26 => "PTRACE_SET_THREAD_AREA",
        30 => "PTRACE_ARCH_PRCTL",
        31 => "PTRACE_SYSEMU",
        32 => "PTRACE_SYSEMU_SINGLESTEP",
        33 => "PTRACE_SINGLEBLOCK",
        0x4200 => "PTRACE_SETOPTIONS",
        0x4201 => "PTRACE_GETEVENTMSG",
        0x4202 => "PTRACE_GETSIGINFO",
        0x4203 => "PTRACE_SETSIGINFO",
        0x4204 => "PTRACE_GETREGSET",
        0x4205 => "PTRACE_SETREGSET",
        0x4206 => "PTRACE_SEIZE",
        0x4207 => "PTRACE_INTERRUPT",
        0x4208 => "PTRACE_LISTEN",
        0x4209 => "PTRACE_PEEKSIGINFO",
        0x420a => "PTRACE_GETSIGMASK",
        0x420b => "PTRACE_SETSIGMASK",
        0x420c => "PTRACE_SECCOMP_GET_FILTER",
        0x420d => "PTRACE_SECCOMP_GET_METADATA",
        0x420e => "PTRACE_GET_SYSCALL_INFO",
        0x420f => "PTRACE_GET_RSEQ_CONFIGURATION",
        0x4210 => "PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG",
        0x4211 => "PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG",
        other => return format!("PTRACE {other:#x}"),
    };
    name.to_owned()
}

const KEYCTL_OPERATIONS: [&str; 33] = [
    "KEYCTL_GET_KEYRING_ID",
    "KEYCTL_JOIN_SESSION_KEYRING",
    "KEYCTL_UPDATE",
    "KEYCTL_REVOKE",
    "KEYCTL_CHOWN",
    "KEYCTL_SETPERM",
    "KEYCTL_DESCRIBE",
    "KEYCTL_CLEAR",
    "KEYCTL_LINK",
    "KEYCTL_UNLINK",
    "KEYCTL_SEARCH",
    "KEYCTL_READ",
    "KEYCTL_INSTANTIATE",
    "KEYCTL_NEGATE",
    "KEYCTL_SET_REQKEY_KEYRING",
    "KEYCTL_SET_TIMEOUT",
    "KEYCTL_ASSUME_AUTHORITY",
    "KEYCTL_GET_SECURITY",
    "KEYCTL_SESSION_TO_PARENT",
    "KEYCTL_REJECT",
    "KEYCTL_INSTANTIATE_IOV",
    "KEYCTL_INVALIDATE",
    "KEYCTL_GET_PERSISTENT",
    "KEYCTL_DH_COMPUTE",
    "KEYCTL_PKEY_QUERY",
    "KEYCTL_PKEY_ENCRYPT",
    "KEYCTL_PKEY_DECRYPT",
    "KEYCTL_PKEY_SIGN",
    "KEYCTL_PKEY_VERIFY",
    "KEYCTL_RESTRICT_KEYRING",
    "KEYCTL_MOVE",
    "KEYCTL_CAPABILITIES",
    "KEYCTL_WATCH_KEY",
];

/// `KEYCTL_*` name of an operation.
pub fn keyctl_operation(op: u64) -> String {
    match KEYCTL_OPERATIONS.get(op as usize) {
        Some(name) => (*name).to_owned(),
        None => format!("KEYCTL {op}"),
    }
}

/// Whether `keyctl`'s second argument is a key serial. It is not for
/// JOIN_SESSION_KEYRING (a name), SET_REQKEY_KEYRING (a mode), SESSION_TO_PARENT (none),
/// GET_PERSISTENT (a uid), DH_COMPUTE (a parameter struct) and CAPABILITIES (a buffer).
pub fn keyctl_arg1_is_key(op: u64) -> bool {
    (op as usize) < KEYCTL_OPERATIONS.len() && !matches!(op, 1 | 14 | 18 | 22 | 23 | 31)
}

/// Set bits of `value` by name, `|`-joined in the table's order; bits no name covers as hex.
fn bit_names(value: u64, table: &[(u64, &str)]) -> String {
    let mut rest = value;
    let mut names: Vec<String> = Vec::new();
    for &(bit, name) in table {
        if rest & bit == bit && bit != 0 {
            names.push(name.to_owned());
            rest &= !bit;
        }
    }
    if rest != 0 || names.is_empty() {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

/// `BPF_*` name of a `bpf` command the sensor reports.
pub fn bpf_command(cmd: u64) -> String {
    match cmd {
        BPF_PROG_LOAD => "BPF_PROG_LOAD".to_owned(),
        BPF_PROG_ATTACH => "BPF_PROG_ATTACH".to_owned(),
        BPF_RAW_TRACEPOINT_OPEN => "BPF_RAW_TRACEPOINT_OPEN".to_owned(),
        BPF_LINK_CREATE => "BPF_LINK_CREATE".to_owned(),
        PERF_EVENT_IOC_SET_BPF => "PERF_EVENT_IOC_SET_BPF".to_owned(),
        other => format!("BPF_CMD {other}"),
    }
}

pub use sensor_common::syscall::{
    BPF_LINK_CREATE, BPF_PROG_ATTACH, BPF_PROG_LOAD, BPF_RAW_TRACEPOINT_OPEN,
    PERF_EVENT_IOC_SET_BPF,
};

/// `enum bpf_prog_type`, in order (uapi `linux/bpf.h`).
const BPF_PROG_TYPES: [&str; 33] = [
    "UNSPEC",
    "SOCKET_FILTER",
    "KPROBE",
    "SCHED_CLS",
    "SCHED_ACT",
    "TRACEPOINT",
    "XDP",
    "PERF_EVENT",
    "CGROUP_SKB",
    "CGROUP_SOCK",
    "LWT_IN",
    "LWT_OUT",
    "LWT_XMIT",
    "SOCK_OPS",
    "SK_SKB",
    "CGROUP_DEVICE",
    "SK_MSG",
    "RAW_TRACEPOINT",
    "CGROUP_SOCK_ADDR",
    "LWT_SEG6LOCAL",
    "LIRC_MODE2",
    "SK_REUSEPORT",
    "FLOW_DISSECTOR",
    "CGROUP_SYSCTL",
    "RAW_TRACEPOINT_WRITABLE",
    "CGROUP_SOCKOPT",
    "TRACING",
    "STRUCT_OPS",
    "EXT",
    "LSM",
    "SK_LOOKUP",
    "SYSCALL",
    "NETFILTER",
];

/// `BPF_PROG_TYPE_*` name of a program type.
pub fn bpf_prog_type(t: u64) -> String {
    match BPF_PROG_TYPES.get(t as usize) {
        Some(name) => format!("BPF_PROG_TYPE_{name}"),
        None => format!("BPF_PROG_TYPE {t}"),
    }
}

/// `enum bpf_attach_type`, in order (uapi `linux/bpf.h`).
const BPF_ATTACH_TYPES: [&str; 49] = [
    "CGROUP_INET_INGRESS",
    "CGROUP_INET_EGRESS",
    "CGROUP_INET_SOCK_CREATE",
    "CGROUP_SOCK_OPS",
    "SK_SKB_STREAM_PARSER",
    "SK_SKB_STREAM_VERDICT",
    "CGROUP_DEVICE",
    "SK_MSG_VERDICT",
    "CGROUP_INET4_BIND",
    "CGROUP_INET6_BIND",
    "CGROUP_INET4_CONNECT",
    "CGROUP_INET6_CONNECT",
    "CGROUP_INET4_POST_BIND",
    "CGROUP_INET6_POST_BIND",
    "CGROUP_UDP4_SENDMSG",
    "CGROUP_UDP6_SENDMSG",
    "LIRC_MODE2",
    "FLOW_DISSECTOR",
    "CGROUP_SYSCTL",
    "CGROUP_UDP4_RECVMSG",
    "CGROUP_UDP6_RECVMSG",
    "CGROUP_GETSOCKOPT",
    "CGROUP_SETSOCKOPT",
    "TRACE_RAW_TP",
    "TRACE_FENTRY",
    "TRACE_FEXIT",
    "MODIFY_RETURN",
    "LSM_MAC",
    "TRACE_ITER",
    "CGROUP_INET4_GETPEERNAME",
    "CGROUP_INET6_GETPEERNAME",
    "CGROUP_INET4_GETSOCKNAME",
    "CGROUP_INET6_GETSOCKNAME",
    "XDP_DEVMAP",
    "CGROUP_INET_SOCK_RELEASE",
    "XDP_CPUMAP",
    "SK_LOOKUP",
    "XDP",
    "SK_SKB_VERDICT",
    "SK_REUSEPORT_SELECT",
    "SK_REUSEPORT_SELECT_OR_MIGRATE",
    "PERF_EVENT",
    "TRACE_KPROBE_MULTI",
    "LSM_CGROUP",
    "STRUCT_OPS",
    "NETFILTER",
    "TCX_INGRESS",
    "TCX_EGRESS",
    "TRACE_UPROBE_MULTI",
];

/// `BPF_*` name of an attach type.
pub fn bpf_attach_type(t: u64) -> String {
    match BPF_ATTACH_TYPES.get(t as usize) {
        Some(name) => format!("BPF_{name}"),
        None => format!("BPF_ATTACH_TYPE {t}"),
    }
}

/// `perf_event_attr.type`: the fixed types by name; a dynamic PMU (`uprobe`, `kprobe`, ...)
/// has a number the kernel gave it at boot, named by the directory of `pmus` (the kernel's
/// `/sys/bus/event_source/devices`) whose `type` file holds it; `type N` when none does.
pub fn perf_type(t: u32, pmus: &Path) -> String {
    match t {
        0 => "hardware".to_owned(),
        1 => "software".to_owned(),
        2 => "tracepoint".to_owned(),
        3 => "hw_cache".to_owned(),
        4 => "raw".to_owned(),
        5 => "breakpoint".to_owned(),
        other => pmu_name(other, pmus).unwrap_or_else(|| format!("type {other}")),
    }
}

fn pmu_name(t: u32, pmus: &Path) -> Option<String> {
    std::fs::read_dir(pmus).ok()?.flatten().find_map(|pmu| {
        let number = std::fs::read_to_string(pmu.path().join("type")).ok()?;
        (number.trim().parse::<u32>().ok()? == t)
            .then(|| pmu.file_name().to_string_lossy().into_owned())
    })
}

/// `PERF_SAMPLE_REGS_USER` | `PERF_SAMPLE_STACK_USER`: samples that copy the target's
/// user registers and stack.
pub const PERF_SAMPLE_USER_MEMORY: u64 = 1 << 12 | 1 << 13;

/// `PERF_SAMPLE_*` bits, from bit 0.
const PERF_SAMPLES: [&str; 25] = [
    "ip",
    "tid",
    "time",
    "addr",
    "read",
    "callchain",
    "id",
    "cpu",
    "period",
    "stream_id",
    "raw",
    "branch_stack",
    "regs_user",
    "stack_user",
    "weight",
    "data_src",
    "identifier",
    "transaction",
    "regs_intr",
    "phys_addr",
    "aux",
    "cgroup",
    "data_page_size",
    "code_page_size",
    "weight_struct",
];

/// The names of the bits of a `sample_type` (`bit N` for a bit past the table).
pub fn perf_samples(sample_type: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| sample_type & 1 << bit != 0)
        .map(|bit| match PERF_SAMPLES.get(bit) {
            Some(name) => (*name).to_owned(),
            None => format!("bit {bit}"),
        })
        .collect()
}

/// fanotify event mask bits (uapi `linux/fanotify.h`).
const FAN_EVENTS: [(u64, &str); 21] = [
    (0x1, "FAN_ACCESS"),
    (0x2, "FAN_MODIFY"),
    (0x4, "FAN_ATTRIB"),
    (0x8, "FAN_CLOSE_WRITE"),
    (0x10, "FAN_CLOSE_NOWRITE"),
    (0x20, "FAN_OPEN"),
    (0x40, "FAN_MOVED_FROM"),
    (0x80, "FAN_MOVED_TO"),
    (0x100, "FAN_CREATE"),
    (0x200, "FAN_DELETE"),
    (0x400, "FAN_DELETE_SELF"),
    (0x800, "FAN_MOVE_SELF"),
    (0x1000, "FAN_OPEN_EXEC"),
    (0x4000, "FAN_Q_OVERFLOW"),
    (0x8000, "FAN_FS_ERROR"),
    (0x1_0000, "FAN_OPEN_PERM"),
    (0x2_0000, "FAN_ACCESS_PERM"),
    (0x4_0000, "FAN_OPEN_EXEC_PERM"),
    (0x800_0000, "FAN_EVENT_ON_CHILD"),
    (0x1000_0000, "FAN_RENAME"),
    (0x4000_0000, "FAN_ONDIR"),
];

/// A fanotify event mask, symbolic (`FAN_ACCESS|FAN_OPEN`).
pub fn fanotify_mask(mask: u64) -> String {
    bit_names(mask, &FAN_EVENTS)
}

pub const FAN_MARK_MOUNT: u64 = 0x10;
pub const FAN_MARK_FILESYSTEM: u64 = 0x100;

/// fanotify mark flags; the mark type (`FAN_MARK_MOUNT`, `FAN_MARK_FILESYSTEM`) included.
const FAN_MARK_FLAGS: [(u64, &str); 10] = [
    (0x1, "FAN_MARK_ADD"),
    (0x2, "FAN_MARK_REMOVE"),
    (0x4, "FAN_MARK_DONT_FOLLOW"),
    (0x8, "FAN_MARK_ONLYDIR"),
    (FAN_MARK_MOUNT, "FAN_MARK_MOUNT"),
    (0x20, "FAN_MARK_IGNORED_MASK"),
    (0x40, "FAN_MARK_IGNORED_SURV_MODIFY"),
    (0x80, "FAN_MARK_FLUSH"),
    (FAN_MARK_FILESYSTEM, "FAN_MARK_FILESYSTEM"),
    (0x200, "FAN_MARK_EVICTABLE"),
];

/// fanotify mark flags, symbolic (`FAN_MARK_ADD|FAN_MARK_MOUNT`).
pub fn fanotify_flags(flags: u64) -> String {
    bit_names(flags, &FAN_MARK_FLAGS)
}

/// What a mark is on: `inode` (the object itself), `mount` or `filesystem`.
pub fn fanotify_mark_type(flags: u64) -> &'static str {
    match flags & (FAN_MARK_MOUNT | FAN_MARK_FILESYSTEM) {
        0 => "inode",
        FAN_MARK_MOUNT => "mount",
        FAN_MARK_FILESYSTEM => "filesystem",
        // Both bits: a mount-namespace mark (FAN_MARK_MNTNS, 6.14 on).
        _ => "mount_namespace",
    }
}

/// `RLIMIT_*` name of a resource (only `RLIMIT_CORE` is reported).
pub fn rlimit_resource(resource: u64) -> String {
    match resource {
        4 => "RLIMIT_CORE".to_owned(),
        other => format!("RLIMIT {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_access() {
        let f = |flags: i32| open_flags(flags as u64);
        assert_eq!(
            f(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
            "O_WRONLY|O_CREAT|O_TRUNC"
        );
        assert_eq!(f(libc::O_RDWR | libc::O_SYNC), "O_RDWR|O_SYNC");
        assert_eq!(f(libc::O_RDWR | libc::O_TMPFILE), "O_RDWR|O_TMPFILE");
        assert_eq!(f(libc::O_PATH | libc::O_CLOEXEC), "O_PATH|O_CLOEXEC");
        assert_eq!(open_flags(0x8000_0000), "O_RDONLY|0x80000000");
        assert_eq!(access((libc::O_PATH | libc::O_RDWR) as u64), "path");
        assert_eq!(access(libc::O_RDWR as u64), "read-write");
        assert_eq!(access(libc::O_WRONLY as u64), "write");
        assert_eq!(ptrace_request(0x5000), "PTRACE 0x5000");
        assert_eq!(keyctl_operation(99), "KEYCTL 99");
    }

    #[test]
    fn core_signal_names() {
        assert_eq!(core_signal(11), "SIGSEGV");
        assert_eq!(core_signal(6), "SIGABRT");
        assert_eq!(core_signal(31), "SIGSYS");
        assert_eq!(core_signal(15), "signal 15");
        // Every signal the kernel program lets through has a name.
        for sig in 0..64 {
            if sensor_common::syscall::CORE_SIGNALS & (1 << sig) != 0 {
                assert!(core_signal(sig).starts_with("SIG"), "{sig}");
            }
        }
    }

    #[test]
    fn bpf_names() {
        assert_eq!(bpf_command(BPF_PROG_LOAD), "BPF_PROG_LOAD");
        assert_eq!(
            bpf_command(BPF_RAW_TRACEPOINT_OPEN),
            "BPF_RAW_TRACEPOINT_OPEN"
        );
        assert_eq!(bpf_command(BPF_LINK_CREATE), "BPF_LINK_CREATE");
        assert_eq!(bpf_command(BPF_PROG_ATTACH), "BPF_PROG_ATTACH");
        assert_eq!(bpf_command(0), "BPF_CMD 0");
        assert_eq!(bpf_prog_type(2), "BPF_PROG_TYPE_KPROBE");
        assert_eq!(bpf_prog_type(17), "BPF_PROG_TYPE_RAW_TRACEPOINT");
        assert_eq!(bpf_prog_type(26), "BPF_PROG_TYPE_TRACING");
        assert_eq!(bpf_prog_type(29), "BPF_PROG_TYPE_LSM");
        assert_eq!(bpf_prog_type(32), "BPF_PROG_TYPE_NETFILTER");
        assert_eq!(bpf_prog_type(99), "BPF_PROG_TYPE 99");
        assert_eq!(bpf_attach_type(0), "BPF_CGROUP_INET_INGRESS");
        assert_eq!(bpf_attach_type(23), "BPF_TRACE_RAW_TP");
        assert_eq!(bpf_attach_type(27), "BPF_LSM_MAC");
        assert_eq!(bpf_attach_type(41), "BPF_PERF_EVENT");
        assert_eq!(bpf_attach_type(43), "BPF_LSM_CGROUP");
        assert_eq!(bpf_attach_type(48), "BPF_TRACE_UPROBE_MULTI");
        assert_eq!(bpf_attach_type(200), "BPF_ATTACH_TYPE 200");
    }

    #[test]
    fn perf_names() {
        let pmus = tempfile::tempdir().unwrap();
        for (name, number) in [("uprobe", "8\n"), ("kprobe", "7\n"), ("odd", "x")] {
            std::fs::create_dir(pmus.path().join(name)).unwrap();
            std::fs::write(pmus.path().join(name).join("type"), number).unwrap();
        }
        assert_eq!(perf_type(1, pmus.path()), "software");
        assert_eq!(perf_type(8, pmus.path()), "uprobe");
        assert_eq!(perf_type(7, pmus.path()), "kprobe");
        assert_eq!(perf_type(9, pmus.path()), "type 9");
        assert_eq!(perf_type(9, Path::new("/nonexistent")), "type 9");
        assert_eq!(
            perf_samples(1 | 1 << 12 | 1 << 13),
            ["ip", "regs_user", "stack_user"]
        );
        assert_eq!(perf_samples(1 << 24 | 1 << 40), ["weight_struct", "bit 40"]);
        assert!(perf_samples(0).is_empty());
        assert_eq!(PERF_SAMPLE_USER_MEMORY & 1 << 13, 1 << 13);
    }

    #[test]
    fn fanotify_names() {
        assert_eq!(fanotify_mask(0x21), "FAN_ACCESS|FAN_OPEN");
        assert_eq!(
            fanotify_mask(0x1_0000 | 0x4000_0000 | 0x2000),
            "FAN_OPEN_PERM|FAN_ONDIR|0x2000"
        );
        assert_eq!(fanotify_mask(0), "0x0");
        assert_eq!(fanotify_flags(0x11), "FAN_MARK_ADD|FAN_MARK_MOUNT");
        assert_eq!(fanotify_flags(0x101), "FAN_MARK_ADD|FAN_MARK_FILESYSTEM");
        assert_eq!(fanotify_mark_type(0x1), "inode");
        assert_eq!(fanotify_mark_type(0x11), "mount");
        assert_eq!(fanotify_mark_type(0x101), "filesystem");
        assert_eq!(fanotify_mark_type(0x111), "mount_namespace");
        assert_eq!(rlimit_resource(4), "RLIMIT_CORE");
        assert_eq!(rlimit_resource(7), "RLIMIT 7");
    }
}
