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
            "open-by-handle" => open_by_handle(&a[0], libc::O_RDONLY),
            "open-path-by-handle" => open_by_handle(&a[0], libc::O_PATH),
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
                // `long request, long pid, unsigned long addr, unsigned long data`, as above.
                let none: libc::c_ulong = 0;
                let r = sys(libc::syscall(
                    libc::SYS_ptrace,
                    libc::PTRACE_ATTACH as libc::c_long,
                    pid as libc::c_long,
                    none,
                    none,
                ));
                if r == 0 {
                    let mut status = 0;
                    libc::waitpid(pid, &mut status, libc::__WALL);
                    libc::syscall(
                        libc::SYS_ptrace,
                        libc::PTRACE_DETACH as libc::c_long,
                        pid as libc::c_long,
                        none,
                        none,
                    );
                }
                r
            }
            // `vm-readv PID ADDR LEN` / `vm-writev PID ADDR LEN`
            "vm-readv" => vm_rw(libc::SYS_process_vm_readv, &a[0], &a[1], &a[2]),
            "vm-writev" => vm_rw(libc::SYS_process_vm_writev, &a[0], &a[1], &a[2]),
            "vm-readv-behind-blocked" => vm_readv_behind_blocked(&a[0], &a[1], &a[2]),
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
            "open-behind-blocked-opens" => open_behind_blocked_opens(&a[0]),
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
            // `compat-fanotify-mark PATH`: an inode open and access mark on PATH through the
            // ia32 entry, whose mask takes two arguments.
            "compat-fanotify-mark" => compat_fanotify_mark(&a[0]),
            // `perf-open PID`: a software clock event on PID sampling its user stack and
            // registers (what reads another process's memory); `-1` is system-wide on CPU 0.
            "perf-open" => perf_open(num(&a[0]) as libc::pid_t),
            // `bpf-load-attach TRACEPOINT`: loads `r0 = 0; exit` as a raw-tracepoint program
            // named `sensor_test`, attaches it to TRACEPOINT and closes both at once. Prints
            // the attach's result (the load's is in its own event).
            "bpf-load-attach" => bpf_load_attach(&a[0]),
            "perf-set-bpf" => perf_set_bpf(),
            // `kill PID SIG`, `pidfd-kill PID SIG`: sends SIG to PID, through kill(2) or a
            // pidfd (pidfd_send_signal).
            "kill" => sys(libc::syscall(
                libc::SYS_kill,
                num(&a[0]) as libc::pid_t,
                num(&a[1]) as libc::c_int,
            )),
            "pidfd-kill" => {
                let pidfd = libc::syscall(libc::SYS_pidfd_open, num(&a[0]) as libc::pid_t, 0);
                sys(libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd,
                    num(&a[1]) as libc::c_int,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                ))
            }
            // `prlimit-core PID SOFT HARD`: sets PID's RLIMIT_CORE.
            "prlimit-core" => {
                let new = libc::rlimit64 {
                    rlim_cur: num(&a[1]) as u64,
                    rlim_max: num(&a[2]) as u64,
                };
                sys(libc::syscall(
                    libc::SYS_prlimit64,
                    num(&a[0]) as libc::pid_t,
                    libc::RLIMIT_CORE,
                    &new,
                    std::ptr::null_mut::<libc::rlimit64>(),
                ))
            }
            // `fanotify-mark inode|mount|filesystem PATH [DIR]`: a notification listener with
            // an open and access mark on PATH (relative to the directory DIR when given),
            // alive for a second after marking.
            "fanotify-mark" => {
                let fan = libc::fanotify_init(libc::FAN_CLASS_NOTIF, libc::O_RDONLY as u32);
                assert!(
                    fan >= 0,
                    "fanotify_init: {}",
                    std::io::Error::last_os_error()
                );
                let how = match a[0].as_str() {
                    "inode" => 0,
                    "mount" => libc::FAN_MARK_MOUNT,
                    "filesystem" => libc::FAN_MARK_FILESYSTEM,
                    other => panic!("unknown mark {other}"),
                };
                let dir = match a.get(2) {
                    Some(d) => libc::open(c(d).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY),
                    None => libc::AT_FDCWD,
                };
                let ret = sys(libc::syscall(
                    libc::SYS_fanotify_mark,
                    fan,
                    libc::FAN_MARK_ADD | how,
                    libc::FAN_OPEN | libc::FAN_ACCESS,
                    dir,
                    c(&a[1]).as_ptr(),
                ));
                // A listener lives on to read its events (this one reads none): its working
                // directory and descriptors stay readable meanwhile.
                std::thread::sleep(std::time::Duration::from_secs(1));
                ret
            }
            "create-open" => create_open(&a[0], a.get(1)),
            "atomic-rotate" => atomic_rotate(&a[0], &a[1]),
            other => panic!("unknown action {other}"),
        }
    }
}

/// Creates `path` and its missing directories as a workload saving a credential would, opens
/// it at once, then removes `remove` (a directory it created) if given: the open happens
/// before the agent's refresh can have seen the new directories.
fn create_open(path: &str, remove: Option<&String>) -> i64 {
    let path = std::path::Path::new(path);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir -p");
    std::fs::write(path, "token").expect("write");
    // SAFETY: the path string lives to the end of the statement.
    let ret = sys(unsafe {
        libc::syscall(
            libc::SYS_open,
            c(path.to_str().expect("utf-8")).as_ptr(),
            libc::O_RDONLY,
        )
    });
    if let Some(dir) = remove {
        std::fs::remove_dir_all(dir).expect("rm -r");
    }
    ret
}

/// Rotates the files of `dir` as Kubernetes' AtomicWriter does for a projected or secret
/// volume (`name -> ..data/name`, `..data -> ..<timestamp>`): a new hidden directory, the
/// new file in it, `..data` swapped to it by rename; then opens `dir/name` at once.
fn atomic_rotate(dir: &str, name: &str) -> i64 {
    let dir = std::path::Path::new(dir);
    let stamp = format!("..2026_12_02_{}", std::process::id());
    std::fs::create_dir(dir.join(&stamp)).expect("mkdir");
    std::fs::write(dir.join(&stamp).join(name), "rotated token").expect("write");
    std::os::unix::fs::symlink(&stamp, dir.join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("rename");
    let path = dir.join(name);
    // SAFETY: the path string lives to the end of the statement.
    sys(unsafe {
        libc::syscall(
            libc::SYS_open,
            c(path.to_str().expect("utf-8")).as_ptr(),
            libc::O_RDONLY,
        )
    })
}

/// `name_to_handle_at` of `path`, then `open_by_handle_at` of the handle with `flags`.
fn open_by_handle(path: &str, flags: libc::c_int) -> i64 {
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
            flags,
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

/// `process_vm_readv` or `process_vm_writev` (`nr`) of LEN bytes at ADDR in PID.
fn vm_rw(nr: libc::c_long, pid: &str, addr: &str, len: &str) -> i64 {
    let len = num(len) as usize;
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: num(addr) as usize as *mut libc::c_void,
        iov_len: len,
    };
    // Counts and flags are `unsigned long`: passed as such, since a variadic `int` fills
    // only the low half of the argument's 8 bytes (`flags`, the seventh, goes on the
    // stack), and the rest is undefined (EINVAL when it is not 0).
    let (one, flags): (libc::c_ulong, libc::c_ulong) = (1, 0);
    // SAFETY: both iovecs describe live memory of `len` bytes (the remote one in PID, which
    // the kernel checks); `buf` outlives the call.
    sys(unsafe {
        libc::syscall(
            nr,
            num(pid) as libc::pid_t,
            &local,
            one,
            &remote,
            one,
            flags,
        )
    })
}

/// More threads than a kretprobe has instances by default (10, or twice the possible
/// CPUs): as many blocked calls take them all, with some to spare.
fn more_than_kretprobe_instances() -> usize {
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .expect("possible CPUs")
        .trim()
        .split([',', '-'])
        .filter_map(|n| n.parse::<usize>().ok())
        .max()
        .expect("a CPU number")
        + 1;
    (2 * possible).max(10) + 8
}

/// Waits until `count` of this process's threads sit in syscall `nr` (their
/// `/proc/.../syscall` starts with the number); fails after 30 s, since without them the
/// action proves nothing.
fn wait_until_inside(nr: libc::c_long, count: usize) {
    let inside = |tid: &std::fs::DirEntry| {
        std::fs::read_to_string(tid.path().join("syscall"))
            .is_ok_and(|s| s.starts_with(&format!("{nr} ")))
    };
    for _ in 0..3000 {
        let waiting = std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .filter_map(Result::ok)
            .filter(inside)
            .count();
        if waiting == count {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{count} threads did not all block in syscall {nr}");
}

/// `open-behind-blocked-opens PATH`: opens PATH while more threads than a kretprobe has
/// instances are blocked inside the kernel's open path, opening FIFOs nobody writes, as any
/// user can; then lets them go and opens `/dev/null` on the same thread, as the next open of
/// a thread comes. Prints PATH's open.
fn open_behind_blocked_opens(path: &str) -> i64 {
    let blocked = more_than_kretprobe_instances();
    let dir = std::env::temp_dir().join(format!("sensor-fifos-{}", std::process::id()));
    std::fs::create_dir(&dir).expect("fifo dir");
    let fifos: Vec<CString> = (0..blocked)
        .map(|i| c(&dir.join(i.to_string()).to_string_lossy()))
        .collect();
    for fifo in &fifos {
        // SAFETY: `fifo` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    }
    let threads: Vec<_> = fifos
        .iter()
        .cloned()
        .map(|fifo| {
            // SAFETY: as above; the descriptor is closed once the open returns.
            std::thread::spawn(move || unsafe {
                let fd = libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    fifo.as_ptr(),
                    libc::O_RDONLY,
                );
                libc::close(fd as libc::c_int);
            })
        })
        .collect();
    wait_until_inside(libc::SYS_openat, blocked);
    // SAFETY: as in `run`.
    let ret = sys(unsafe { libc::syscall(libc::SYS_open, c(path).as_ptr(), libc::O_RDONLY) });
    for fifo in &fifos {
        // SAFETY: as above. A writer's open lets the blocked reader go.
        unsafe { libc::close(libc::open(fifo.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK)) };
    }
    for t in threads {
        t.join().expect("fifo reader");
    }
    // SAFETY: as above.
    unsafe { libc::close(libc::open(c("/dev/null").as_ptr(), libc::O_RDONLY)) };
    let _ = std::fs::remove_dir_all(&dir);
    ret
}

/// `<linux/userfaultfd.h>`, which libc does not carry.
const UFFD_API: u64 = 0xaa;
/// `_IOWR(0xaa, 0x3f, struct uffdio_api)`: three `u64`s.
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
/// `_IOWR(0xaa, 0x00, struct uffdio_register)`: four `u64`s.
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// `vm-readv-behind-blocked PID ADDR LEN`: `vm-readv PID ADDR LEN` while more threads than a
/// kretprobe has instances are blocked inside `process_vm_readv`, each copying its iovec
/// from a page whose fault a userfaultfd holds (root's way; a FUSE-backed mapping blocks the
/// same copy for any user who can mount one). Then lets them go and exits, as the thread's
/// next hook comes. Prints the read's result.
fn vm_readv_behind_blocked(pid: &str, addr: &str, len: &str) -> i64 {
    let blocked = more_than_kretprobe_instances();
    // SAFETY: the userfaultfd and the page are this process's own; the ioctls are handed
    // structs of the sizes their numbers encode, which outlive the calls.
    let (uffd, page) = unsafe {
        let uffd = libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) as libc::c_int;
        assert!(
            uffd >= 0,
            "userfaultfd: {}",
            std::io::Error::last_os_error()
        );
        let mut api = [UFFD_API, 0, 0];
        assert_eq!(
            libc::ioctl(uffd, UFFDIO_API, api.as_mut_ptr()),
            0,
            "UFFDIO_API"
        );
        let page = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(page, libc::MAP_FAILED);
        let mut register = [page as u64, 4096, UFFDIO_REGISTER_MODE_MISSING, 0];
        assert_eq!(
            libc::ioctl(uffd, UFFDIO_REGISTER, register.as_mut_ptr()),
            0,
            "UFFDIO_REGISTER"
        );
        (uffd, page as usize)
    };
    let threads: Vec<_> = (0..blocked)
        .map(|_| {
            // SAFETY: both iovec arrays are the registered page: the kernel's copy of them
            // waits on the userfaultfd, then reads zeros (no iovec, nothing read).
            std::thread::spawn(move || unsafe {
                let (one, flags): (libc::c_ulong, libc::c_ulong) = (1, 0);
                libc::syscall(
                    libc::SYS_process_vm_readv,
                    libc::getpid(),
                    page,
                    one,
                    page,
                    one,
                    flags,
                );
            })
        })
        .collect();
    wait_until_inside(libc::SYS_process_vm_readv, blocked);
    let ret = vm_rw(libc::SYS_process_vm_readv, pid, addr, len);
    // SAFETY: closing the userfaultfd wakes the waiting faults, which then fill the page
    // with zeros.
    unsafe { libc::close(uffd) };
    for t in threads {
        t.join().expect("blocked reader");
    }
    ret
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

/// `perf_event_open` of a software CPU clock on `pid` with user-stack and user-register
/// sampling. `struct perf_event_attr` is built by hand (libc has no definition): the layout
/// of `PERF_ATTR_SIZE_VER5`, 112 bytes.
fn perf_open(pid: libc::pid_t) -> i64 {
    let fd = perf_event(pid);
    if fd >= 0 {
        // SAFETY: the descriptor was just created for this process and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    fd
}

/// A sampling CPU-clock perf event of `pid` (on every CPU, or CPU 0 for -1): its descriptor
/// or `-errno`.
fn perf_event(pid: libc::pid_t) -> i64 {
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
    const PERF_SAMPLE_IP: u64 = 1;
    const PERF_SAMPLE_REGS_USER: u64 = 1 << 12;
    const PERF_SAMPLE_STACK_USER: u64 = 1 << 13;
    let mut attr = [0u8; 112];
    let mut put = |offset: usize, bytes: &[u8]| {
        attr[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(0, &PERF_TYPE_SOFTWARE.to_ne_bytes());
    put(4, &112u32.to_ne_bytes());
    put(8, &PERF_COUNT_SW_CPU_CLOCK.to_ne_bytes());
    put(16, &100_000u64.to_ne_bytes()); // sample_period
    put(
        24,
        &(PERF_SAMPLE_IP | PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER).to_ne_bytes(),
    );
    // disabled (bit 0), exclude_kernel (bit 5), exclude_hv (bit 6)
    put(40, &(1u64 | 1 << 5 | 1 << 6).to_ne_bytes());
    put(80, &0xffu64.to_ne_bytes()); // sample_regs_user: ax..di
    put(88, &8192u32.to_ne_bytes()); // sample_stack_user
    let cpu = if pid == -1 { 0 } else { -1 };
    // SAFETY: `attr` is a local of the size its `size` field announces, outliving the call.
    sys(unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            pid,
            cpu,
            -1,
            8u64, // PERF_FLAG_FD_CLOEXEC
        )
    })
}

/// Loads a two-instruction program of `prog_type` named `sensor_test`: its descriptor or
/// `-errno`.
fn load_prog(prog_type: u32) -> i64 {
    const BPF_PROG_LOAD: libc::c_long = 5;
    // r0 = 0 (BPF_ALU64 | BPF_MOV | BPF_K); exit (BPF_JMP | BPF_EXIT)
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c("GPL");
    // union bpf_attr for BPF_PROG_LOAD: prog_type @0, insn_cnt @4, insns @8, license @16,
    // prog_name @48 (16 bytes); 128 zeroed bytes cover every field up to the ones it uses.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..59].copy_from_slice(b"sensor_test");
    // SAFETY: `attr` is a local of the size passed, the instructions and license it points to
    // are locals that outlive the call.
    sys(unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), 128) })
}

/// Attaches a `BPF_PROG_TYPE_PERF_EVENT` program to a sampling perf event of this process
/// with `ioctl(PERF_EVENT_IOC_SET_BPF)`, as a profiler reading other processes' stacks
/// does: the ioctl's result.
fn perf_set_bpf() -> i64 {
    const BPF_PROG_TYPE_PERF_EVENT: u32 = 7;
    const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
    let event = perf_event(0);
    assert!(event >= 0, "perf_event_open: {event}");
    let prog = load_prog(BPF_PROG_TYPE_PERF_EVENT);
    assert!(prog >= 0, "BPF_PROG_LOAD: {prog}");
    // SAFETY: both descriptors were just created for this process and nothing else owns
    // them; the ioctl takes the program's descriptor by value.
    unsafe {
        let (event, prog) = (
            OwnedFd::from_raw_fd(event as i32),
            OwnedFd::from_raw_fd(prog as i32),
        );
        use std::os::fd::AsRawFd;
        sys(
            libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd())
                as libc::c_long,
        )
    }
}

/// Loads a two-instruction raw-tracepoint program and attaches it to `tracepoint`.
fn bpf_load_attach(tracepoint: &str) -> i64 {
    const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
    const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
    let prog = load_prog(BPF_PROG_TYPE_RAW_TRACEPOINT);
    if prog < 0 {
        return prog;
    }
    // SAFETY: the descriptor was just created for this process and nothing else owns it.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let name = c(tracepoint);
    // raw_tracepoint { name @0, prog_fd @8 }
    let mut open = [0u8; 16];
    open[0..8].copy_from_slice(&(name.as_ptr() as u64).to_ne_bytes());
    open[8..12].copy_from_slice(&std::os::fd::AsRawFd::as_raw_fd(&prog).to_ne_bytes());
    // SAFETY: as for the load; `name` outlives the call.
    let link =
        sys(unsafe { libc::syscall(libc::SYS_bpf, BPF_RAW_TRACEPOINT_OPEN, open.as_ptr(), 16) });
    if link >= 0 {
        // SAFETY: as for `prog`.
        drop(unsafe { OwnedFd::from_raw_fd(link as i32) });
    }
    link
}

/// `fanotify_mark(fan, FAN_MARK_ADD, FAN_OPEN | FAN_ACCESS, AT_FDCWD, path)` through the ia32
/// entry: ebx fd, ecx flags, edx mask (low half), esi mask (high half), edi dirfd, ebp path.
fn compat_fanotify_mark(path: &str) -> i64 {
    // SAFETY: the path is NUL-terminated in a page below 4 GiB (`low_page`). rbx
    // and rbp (reserved by Rust) are saved and restored on the stack around the call, and
    // every register the ia32 entry may change is declared clobbered.
    unsafe {
        let fan = libc::fanotify_init(libc::FAN_CLASS_NOTIF, libc::O_RDONLY as u32);
        assert!(
            fan >= 0,
            "fanotify_init: {}",
            std::io::Error::last_os_error()
        );
        let buf = low_page(path);
        let ret: i64;
        std::arch::asm!(
            "push rbx",
            "push rbp",
            "mov ebx, {fd:e}",
            "mov ebp, {path:e}",
            "int 0x80",
            "pop rbp",
            "pop rbx",
            fd = in(reg) fan as u64,
            path = in(reg) buf,
            inlateout("rax") 339i64 => ret,
            inout("rcx") libc::FAN_MARK_ADD as u64 => _,
            inout("rdx") libc::FAN_OPEN | libc::FAN_ACCESS => _,
            inout("rsi") 0u64 => _,
            inout("rdi") libc::AT_FDCWD as u32 as u64 => _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
        ret
    }
}
