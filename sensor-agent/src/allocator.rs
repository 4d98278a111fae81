//! The agent's allocator: mimalloc, not glibc's malloc.
//!
//! In a storm every event's strings are allocated on the enrich thread and freed on the chain
//! thread; glibc's malloc spent about a third of the agent's CPU on that (`_int_malloc`,
//! `_int_free`, `malloc_consolidate`; docs/performance.md "Issue 12: where the targets
//! stand"). mimalloc frees a block of another thread without a lock or a consolidation pass.
//!
//! Its defaults cost memory an idle agent should not hold (target: 64 MiB): it commits a whole
//! arena at once and asks for transparent huge pages, so a 2 MiB page barely used stays
//! resident, and it returns freed memory only after a delay, on a later allocation, so what
//! the start-up allocates for a moment (the kernel's BTF, the first `/proc` scan) stays too.
//! With the defaults the idle agent held 118–127 MiB; with [`configure`], 57 MiB (VmRSS).

use std::ffi::c_long;

use libmimalloc_sys::{mi_option_set, mi_option_t};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Options of mimalloc's `mi_option_e` (include/mimalloc.h), which the bindings do not name,
/// and the value the agent gives each: commit arena memory as it is used (default 2: all at
/// once where the system overcommits), return freed memory at once (default 1,000 ms), no
/// transparent huge pages (default 1).
const OPTIONS: [(mi_option_t, &str, c_long); 3] = [
    (4, "arena_eager_commit", 0),
    (15, "purge_delay", 0),
    (43, "allow_thp", 0),
];

/// [`configure`] as the process loads, before `main`: the Rust runtime allocates before
/// `main` runs, and that first allocation reserves mimalloc's first arena with the options
/// then in force (set from `main`, they left the idle agent at 63–65 MiB).
#[used]
// SAFETY: the loader calls each `.init_array` entry once, with no arguments, before `main`;
// `at_load` is such a function and needs nothing of the Rust runtime.
#[unsafe(link_section = ".init_array")]
static CONFIGURE_AT_LOAD: extern "C" fn() = {
    extern "C" fn at_load() {
        configure();
    }
    at_load
};

/// Sets the allocator's options. Runs before any thread exists (`mi_option_set` is not
/// thread safe): at load, from [`CONFIGURE_AT_LOAD`].
fn configure() {
    for (option, _, value) in OPTIONS {
        // SAFETY: each is an option of mimalloc's `mi_option_e` with an integer value (the test
        // below checks each index by the option's name); the loader runs this before any
        // other thread exists.
        unsafe { mi_option_set(option, value) };
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::{c_char, c_void, CStr};

    use libmimalloc_sys::mi_output_fun;

    use super::*;

    extern "C" {
        /// Prints every option as `option '<name>': <value>` (src/options.c).
        fn mi_options_print_out(out: mi_output_fun, arg: *mut c_void);
    }

    /// mimalloc's output callback: appends each message to the `String` behind `arg`.
    ///
    /// # Safety
    /// `msg` is NUL-terminated and `arg` points to a `String` no one else uses during the call.
    unsafe extern "C" fn append(msg: *const c_char, arg: *mut c_void) {
        // SAFETY: mimalloc passes a NUL-terminated message and the `arg` given below, a
        // `String` that outlives the call.
        let (out, msg) = unsafe { (&mut *arg.cast::<String>(), CStr::from_ptr(msg)) };
        out.push_str(&msg.to_string_lossy());
    }

    /// The bindings name none of the options: an index that named another option would set
    /// that one instead. mimalloc's own listing names each; the values also show that the
    /// options were set before this test ran, at load.
    #[test]
    fn the_options_are_set_at_load_under_their_names() {
        let mut printed = String::new();
        // SAFETY: `append` matches `mi_output_fun` and only appends to `printed`, which lives
        // until the call returns.
        unsafe { mi_options_print_out(Some(append), (&raw mut printed).cast()) };
        for (_, name, value) in OPTIONS {
            let line = format!("option '{name}': {value} ");
            assert!(
                printed.contains(&line),
                "no {line:?} in mimalloc's options:\n{printed}"
            );
        }
    }
}
