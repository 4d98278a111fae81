//! Syscall events (`ptrace`, `process_vm_*`, `pidfd_getfd`, the key syscalls) and io_uring
//! opens: the arguments spelled out and the target process named.

use sensor_common::{EventKind, IoUringEvent, SyscallEvent, IORING_OP_OPENAT, IORING_OP_OPENAT2};
use sensor_log::{Event, Kind, SyscallDetail};

use super::names::{
    core_signal, keyctl_arg1_is_key, keyctl_operation, ptrace_request, PTRACE_TRACEME,
};
use super::Enricher;
use crate::pipeline::decode::c_string;

impl Enricher {
    pub(super) fn syscall_event(&mut self, e: &SyscallEvent) -> Option<Event> {
        let (kind, out_kind) = self.kinds_of(e.header.kind)?;
        let ok = e.ret >= 0;
        let mut detail = SyscallDetail {
            compat: e.compat != 0,
            ..SyscallDetail::default()
        };
        let target = match kind {
            EventKind::Ptrace => {
                let request = e.args[0];
                detail.operation = Some(ptrace_request(request));
                if request == PTRACE_TRACEME {
                    None
                } else {
                    self.caller_target(&e.header, e.target_tgid)
                }
            }
            EventKind::ProcessVmReadv | EventKind::ProcessVmWritev => {
                detail.bytes = ok.then_some(e.ret as u64);
                self.caller_target(&e.header, e.target_tgid)
            }
            EventKind::PidfdGetfd => {
                detail.target_fd = Some(e.args[1] as u32 as i32);
                // The kernel resolved the pidfd to a host tgid.
                (e.target_tgid != 0).then(|| self.target(e.target_tgid))
            }
            EventKind::Keyctl => {
                let op = e.args[0];
                detail.operation = Some(keyctl_operation(op));
                // key_serial_t is a 32-bit int; special keyrings are negative.
                detail.key_serial =
                    keyctl_arg1_is_key(op).then_some(e.args[1] as u32 as i32 as i64);
                None
            }
            EventKind::AddKey | EventKind::RequestKey => {
                detail.key_type = Some(c_string(&e.key_type));
                detail.key_description = Some(c_string(&e.key_desc));
                detail.key_serial = ok.then_some(e.ret);
                None
            }
            EventKind::CoreSignal => {
                detail.operation = Some(core_signal(u64::from(e.signal)));
                // pidfd_send_signal: the kernel resolved the pidfd to a host tgid.
                let target = if e.target_on_host != 0 {
                    (e.target_tgid != 0).then(|| self.target(e.target_tgid))
                } else {
                    self.caller_target(&e.header, e.target_tgid)
                };
                // The caller itself, seen through its own pid namespace: `abort()`.
                if target.as_ref().is_some_and(|t| t.pid == e.header.tgid) {
                    self.stats.self_access += 1;
                    return None;
                }
                target
            }
            // A file or io_uring kind in a syscall record: a kernel/agent mismatch.
            _ => {
                self.stats.malformed += 1;
                return None;
            }
        };
        let mut event = self.base(out_kind, &e.header, Some(e.ret));
        event.target = target;
        event.syscall = Some(detail);
        Some(event)
    }

    pub(super) fn io_uring_event(&mut self, e: &IoUringEvent) -> Event {
        let operation = match e.opcode {
            IORING_OP_OPENAT => "IORING_OP_OPENAT".to_owned(),
            IORING_OP_OPENAT2 => "IORING_OP_OPENAT2".to_owned(),
            other => format!("IORING_OP {other}"),
        };
        let mut event = self.base(Kind::IoUring, &e.header, None);
        event.syscall = Some(SyscallDetail {
            operation: Some(operation),
            ..SyscallDetail::default()
        });
        event
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::{
        EventKind, IoUringEvent, SyscallEvent, IORING_OP_OPENAT2, KEY_DESC_LEN, KEY_TYPE_LEN,
    };
    use sensor_log::{Kind, SyscallDetail, Target};

    use super::super::fixture::{c_buf, fixture, header, Fixture, ACTOR, VICTIM};
    use crate::pipeline::decode::Decoded;

    fn syscall_event(kind: EventKind, args: [u64; 6], ret: i64, target: u32) -> SyscallEvent {
        SyscallEvent {
            header: header(kind),
            ret,
            args,
            target_tgid: target,
            compat: 0,
            target_on_host: 0,
            signal: 0,
            _pad: 0,
            key_type: [0; KEY_TYPE_LEN],
            key_desc: [0; KEY_DESC_LEN],
        }
    }

    fn enrich_syscall(f: &mut Fixture, e: SyscallEvent) -> (Option<Target>, SyscallDetail) {
        let event = f.enricher.enrich(&Decoded::Syscall(e)).unwrap();
        (event.target, event.syscall.unwrap())
    }

    #[test]
    fn syscall_details() {
        let mut f = fixture();
        let victim = Some(Target {
            pid: VICTIM,
            exe: Some("/usr/bin/victim".into()),
        });

        let (target, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::Ptrace, [16, 201, 0, 0, 0, 0], 0, 201),
        );
        assert_eq!(
            (target, d.operation.as_deref()),
            (victim.clone(), Some("PTRACE_ATTACH"))
        );
        let (_, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::Ptrace, [0x4206, 200, 0, 0, 0, 0], 0, 200),
        );
        assert_eq!(d.operation.as_deref(), Some("PTRACE_SEIZE"));

        let mut readv = syscall_event(EventKind::ProcessVmReadv, [200, 0, 1, 0, 1, 0], 4096, 200);
        readv.compat = 1;
        let (target, d) = enrich_syscall(&mut f, readv);
        assert_eq!(
            (target, d.bytes, d.compat),
            (victim.clone(), Some(4096), true)
        );
        let failed = f
            .enricher
            .enrich(&Decoded::Syscall(syscall_event(
                EventKind::ProcessVmWritev,
                [200, 0, 1, 0, 1, 0],
                -1,
                200,
            )))
            .unwrap();
        assert_eq!(
            (failed.kind, failed.ok, failed.errno),
            (Kind::ProcessVmWritev, false, Some(1))
        );
        assert_eq!(failed.syscall.unwrap().bytes, None);

        let (target, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::PidfdGetfd, [7, 12, 0, 0, 0, 0], 5, 200),
        );
        assert_eq!((target, d.target_fd), (victim.clone(), Some(12)));

        // kill(200, SIGSEGV); pidfd_send_signal, whose target the kernel resolved.
        let mut segv = syscall_event(EventKind::CoreSignal, [200, 11, 0, 0, 0, 0], 0, 200);
        segv.signal = 11;
        let (target, d) = enrich_syscall(&mut f, segv);
        assert_eq!(
            (target, d.operation.as_deref()),
            (victim.clone(), Some("SIGSEGV"))
        );
        let mut pidfd = syscall_event(EventKind::CoreSignal, [7, 6, 0, 0, 0, 0], 0, VICTIM);
        (pidfd.signal, pidfd.target_on_host) = (6, 1);
        let (target, d) = enrich_syscall(&mut f, pidfd);
        assert_eq!((target, d.operation.as_deref()), (victim, Some("SIGABRT")));
        // The caller itself through its own pid namespace (the kernel saw another number).
        let mut own = syscall_event(EventKind::CoreSignal, [ACTOR as u64, 6, 0, 0, 0, 0], 0, 0);
        (own.signal, own.target_on_host, own.target_tgid) = (6, 1, ACTOR);
        assert!(f.enricher.enrich(&Decoded::Syscall(own)).is_none());

        let serial = (-4i32) as u32 as u64; // KEY_SPEC_USER_KEYRING, as a 32-bit int in a register
        let (_, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::Keyctl, [11, serial, 0, 0, 0, 0], 32, 0),
        );
        assert_eq!(
            (d.operation.as_deref(), d.key_serial),
            (Some("KEYCTL_READ"), Some(-4))
        );
        let (_, d) = enrich_syscall(
            &mut f,
            syscall_event(EventKind::Keyctl, [1, 0x7fff_0000, 0, 0, 0, 0], 5, 0),
        );
        assert_eq!(
            (d.operation.as_deref(), d.key_serial),
            (Some("KEYCTL_JOIN_SESSION_KEYRING"), None)
        );

        let mut add = syscall_event(EventKind::AddKey, [0; 6], 123_456, 0);
        add.key_type = c_buf::<KEY_TYPE_LEN>(b"user");
        add.key_desc = c_buf::<KEY_DESC_LEN>(b"db-password");
        let event = f.enricher.enrich(&Decoded::Syscall(add)).unwrap();
        assert_eq!(event.kind, Kind::AddKey);
        let d = event.syscall.unwrap();
        assert_eq!(
            (
                d.key_type.as_deref(),
                d.key_description.as_deref(),
                d.key_serial
            ),
            (Some("user"), Some("db-password"), Some(123_456))
        );
        let mut request = syscall_event(EventKind::RequestKey, [0; 6], -126, 0);
        request.key_type = c_buf::<KEY_TYPE_LEN>(b"logon");
        let event = f.enricher.enrich(&Decoded::Syscall(request)).unwrap();
        assert_eq!(
            (event.kind, event.errno, event.syscall.unwrap().key_serial),
            (Kind::RequestKey, Some(126), None)
        );
    }

    #[test]
    fn io_uring_opcode() {
        let mut f = fixture();
        let e = IoUringEvent {
            header: header(EventKind::IoUring),
            opcode: IORING_OP_OPENAT2,
            _pad: [0; 7],
            user_data: 9,
        };
        let event = f.enricher.enrich(&Decoded::IoUring(e)).unwrap();
        assert_eq!((event.kind, event.ok), (Kind::IoUring, true));
        assert_eq!(
            event.syscall.unwrap().operation.as_deref(),
            Some("IORING_OP_OPENAT2")
        );
    }
}
