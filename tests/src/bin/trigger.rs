//! Performs one credential-relevant action, the way an attacker or a workload would, so the
//! integration tests can check that the agent reports it. Each action uses the raw syscall
//! so the test knows exactly which entry point was exercised.
//!
//! Usage: `trigger [--loginuid N] [--cgroup DIR]... ACTION ARGS...`; prints the result of the
//! syscall on stdout and exits 0 whether or not the syscall succeeded.

use std::{
    ffi::CString,
    io::Read,
    os::fd::{FromRawFd, OwnedFd},
};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a.starts_with("--")) {
        while args.first().is_some_and(|a| a.starts_with("--")) {
            let flag = args.remove(0);
            let value = args.remove(0);
            match flag.as_str() {
                // Login uid, as pam_loginuid sets it for a login session.
                "--loginuid" => std::fs::write("/proc/self/loginuid", value).expect("set loginuid"),
                // Move into a cgroup directory, as systemd or a container runtime would.
                "--cgroup" => std::fs::write(
                    format!("{value}/cgroup.procs"),
                    std::process::id().to_string(),
                )
                .expect("join cgroup"),
                other => panic!("unknown flag {other}"),
            }
        }
        // Then exec the action, as a service manager or runtime execs the workload after
        // placing it: the agent learns the new placement at exec.
        let err = std::os::unix::process::CommandExt::exec(
            std::process::Command::new(std::env::current_exe().expect("own path")).args(&args),
        );
        panic!("re-exec: {err}");
    }
    let action = args.remove(0);
    let ret = run(&action, &args);
    println!("{ret}");
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in argument")
}

fn num(s: &str) -> i64 {
    s.parse().expect("a number")
}

/// Result of a raw syscall: the value, or `-errno`.
fn sys(ret: libc::c_long) -> i64 {
    if ret < 0 {
        -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
    } else {
        ret
    }
}

fn run(action: &str, a: &[String]) -> i64 {
    // SAFETY: every pointer handed to the kernel is to memory that outlives the call: the
    // `c()` strings are temporaries that live to the end of their statement, the buffers,
    // iovecs and `open_how` are locals sized as the length passed with them. A remote
    // address for process_vm_* names memory of the target process, never of this one.
    unsafe {
        match action {
            "open" => sys(libc::syscall(
                libc::SYS_open,
                c(&a[0]).as_ptr(),
                libc::O_RDONLY,
            )),
            "open-write" => sys(libc::syscall(
                libc::SYS_open,
                c(&a[0]).as_ptr(),
                libc::O_WRONLY | libc::O_APPEND,
            )),
            "open-rdwr" => sys(libc::syscall(
                libc::SYS_open,
                c(&a[0]).as_ptr(),
                libc::O_RDWR,
            )),
            "open-path" => sys(libc::syscall(
                libc::SYS_open,
                c(&a[0]).as_ptr(),
                libc::O_PATH,
            )),
            "openat" => sys(libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c(&a[0]).as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )),
            // openat relative to a directory descriptor: `openat-dir DIR NAME`.
            "openat-dir" => {
                let dir = libc::open(c(&a[0]).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
                sys(libc::syscall(
                    libc::SYS_openat,
                    dir,
                    c(&a[1]).as_ptr(),
                    libc::O_RDONLY,
                ))
            }
            "openat2" => {
                // struct open_how { u64 flags; u64 mode; u64 resolve; }
                let how: [u64; 3] = [libc::O_RDONLY as u64, 0, 0];
                sys(libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    c(&a[0]).as_ptr(),
                    how.as_ptr(),
                    std::mem::size_of_val(&how),
                ))
            }
            "creat" => sys(libc::syscall(libc::SYS_creat, c(&a[0]).as_ptr(), 0o600)),
            "open-by-handle" => open_by_handle(&a[0]),
            // open through the ia32 entry (`int 0x80`) with a 32-bit addressable path.
            "compat-open" => compat_open(&a[0]),
            "read-file" => {
                let mut s = String::new();
                match std::fs::File::open(&a[0]).and_then(|mut f| f.read_to_string(&mut s)) {
                    Ok(n) => n as i64,
                    Err(e) => -(e.raw_os_error().unwrap_or(0) as i64),
                }
            }
            // PTRACE_ATTACH then detach: `ptrace-attach PID`.
            "ptrace-attach" => {
                let pid = num(&a[0]) as libc::pid_t;
                let r = sys(libc::syscall(
                    libc::SYS_ptrace,
                    libc::PTRACE_ATTACH,
                    pid,
                    0,
                    0,
                ));
                if r == 0 {
                    let mut status = 0;
                    libc::waitpid(pid, &mut status, libc::__WALL);
                    libc::syscall(libc::SYS_ptrace, libc::PTRACE_DETACH, pid, 0, 0);
                }
                r
            }
            // `vm-readv PID ADDR LEN` / `vm-writev PID ADDR LEN`
            "vm-readv" | "vm-writev" => {
                let pid = num(&a[0]) as libc::pid_t;
                let len = num(&a[2]) as usize;
                let mut buf = vec![0u8; len];
                let local = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: len,
                };
                let remote = libc::iovec {
                    iov_base: num(&a[1]) as usize as *mut libc::c_void,
                    iov_len: len,
                };
                let nr = if action == "vm-readv" {
                    libc::SYS_process_vm_readv
                } else {
                    libc::SYS_process_vm_writev
                };
                sys(libc::syscall(nr, pid, &local, 1, &remote, 1, 0))
            }
            // `pidfd-getfd PID FD`
            "pidfd-getfd" => {
                let pidfd = libc::syscall(libc::SYS_pidfd_open, num(&a[0]) as libc::pid_t, 0);
                sys(libc::syscall(
                    libc::SYS_pidfd_getfd,
                    pidfd,
                    num(&a[1]) as libc::c_int,
                    0,
                ))
            }
            // `add-key DESC` adds a user key to the process keyring, then reads it back with keyctl.
            "add-key" => {
                let payload = b"secret";
                let serial = libc::syscall(
                    libc::SYS_add_key,
                    c("user").as_ptr(),
                    c(&a[0]).as_ptr(),
                    payload.as_ptr(),
                    payload.len(),
                    libc::KEY_SPEC_PROCESS_KEYRING,
                );
                let mut buf = [0u8; 64];
                libc::syscall(
                    libc::SYS_keyctl,
                    libc::KEYCTL_READ,
                    serial,
                    buf.as_mut_ptr(),
                    buf.len(),
                );
                sys(serial)
            }
            // `request-key DESC`: looks up a key that does not exist (no upcall).
            "request-key" => sys(libc::syscall(
                libc::SYS_request_key,
                c("user").as_ptr(),
                c(&a[0]).as_ptr(),
                std::ptr::null::<libc::c_char>(),
                0,
            )),
            "io-uring-open" => io_uring_open(&a[0]),
            // `rename OLD NEW`, `renameat2-exchange OLD NEW`, `unlink PATH`, `link OLD NEW`:
            // the plain syscalls, as `sed -i`, an editor's save or an attacker makes them.
            "rename" => sys(libc::syscall(
                libc::SYS_rename,
                c(&a[0]).as_ptr(),
                c(&a[1]).as_ptr(),
            )),
            "renameat2-exchange" => sys(libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                c(&a[0]).as_ptr(),
                libc::AT_FDCWD,
                c(&a[1]).as_ptr(),
                libc::RENAME_EXCHANGE,
            )),
            "unlink" => sys(libc::syscall(libc::SYS_unlink, c(&a[0]).as_ptr())),
            "link" => sys(libc::syscall(
                libc::SYS_link,
                c(&a[0]).as_ptr(),
                c(&a[1]).as_ptr(),
            )),
            // rename through the ia32 entry (`int 0x80`, syscall 38).
            "compat-rename" => compat_rename(&a[0], &a[1]),
            other => panic!("unknown action {other}"),
        }
    }
}

fn open_by_handle(path: &str) -> i64 {
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        data: [u8; 128],
    }
    let mut h = Handle {
        bytes: 128,
        kind: 0,
        data: [0; 128],
    };
    let mut mount_id = 0;
    // SAFETY: `h` is a file_handle header followed by the 128 bytes its `bytes` field
    // announces, and `mount_id` an int, both locals that outlive the calls; the path strings
    // live to the end of their statements.
    unsafe {
        let r = libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c(path).as_ptr(),
            &mut h,
            &mut mount_id,
            0,
        );
        assert_eq!(
            r,
            0,
            "name_to_handle_at: {}",
            std::io::Error::last_os_error()
        );
        let dir = std::path::Path::new(path).parent().expect("a parent");
        let mount_fd = libc::open(
            c(dir.to_str().expect("utf-8")).as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY,
        );
        sys(libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd,
            &mut h,
            libc::O_RDONLY,
        ))
    }
}

/// open through the ia32 entry: syscall 5, `open(path, O_RDONLY)`.
fn compat_open(path: &str) -> i64 {
    int80(5, low_page(path), libc::O_RDONLY as u64)
}

/// rename through the ia32 entry: syscall 38, `rename(old, new)`.
fn compat_rename(old: &str, new: &str) -> i64 {
    int80(38, low_page(old), low_page(new))
}

/// The ia32 syscall `nr` with two arguments (`ebx`, `ecx`), through `int 0x80`.
fn int80(nr: i64, ebx: u64, ecx: u64) -> i64 {
    let ret: i64;
    // SAFETY: the caller passes arguments the syscall reads as 32-bit values (addresses from
    // `low_page`, below 4 GiB). The asm saves and restores rbx (reserved by Rust) on the
    // stack, which is why it is not `nostack`, and declares every register the ia32 entry
    // may change as clobbered.
    unsafe {
        std::arch::asm!(
            "push rbx",
            "mov ebx, {ebx:e}",
            "int 0x80",
            "pop rbx",
            ebx = in(reg) ebx,
            inlateout("rax") nr => ret,
            inout("rcx") ecx => _,
            // Kernels before 4.17 returned zero in r8-r11 from `int 0x80`.
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
    }
    ret
}

/// A fresh private page below 4 GiB holding `path` and its NUL, for an ia32 syscall.
fn low_page(path: &str) -> u64 {
    assert!(path.len() < 4096, "the path and its NUL must fit one page");
    // SAFETY: a fresh private anonymous page receives the path (shorter than the page,
    // checked above); the page's zero bytes after it are its NUL. It is never unmapped: the
    // process exits right after its one syscall.
    unsafe {
        let buf = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        );
        assert_ne!(buf, libc::MAP_FAILED);
        std::ptr::copy_nonoverlapping(path.as_ptr(), buf.cast::<u8>(), path.len());
        buf as u64
    }
}

fn io_uring_open(path: &str) -> i64 {
    let mut ring = io_uring::IoUring::new(4).expect("io_uring_setup");
    let p = c(path);
    let sqe = io_uring::opcode::OpenAt::new(io_uring::types::Fd(libc::AT_FDCWD), p.as_ptr())
        .flags(libc::O_RDONLY)
        .build();
    // SAFETY: the entry's path pointer is `p`, which lives until after the completion below
    // has been reaped, so the kernel reads valid memory.
    unsafe { ring.submission().push(&sqe).expect("queue") };
    ring.submit_and_wait(1).expect("submit");
    let cqe = ring.completion().next().expect("a completion");
    let fd = cqe.result();
    if fd >= 0 {
        // SAFETY: `fd` is the descriptor the kernel just created for this open; nothing else
        // owns it, so closing it here is its only close.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    fd as i64
}
