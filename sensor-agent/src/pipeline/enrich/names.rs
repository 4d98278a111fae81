//! Names of the numbers in kernel events: open flags, `ptrace` requests, `keyctl`
//! operations.

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
}
