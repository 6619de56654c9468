//! Memory placement on machines with several NUMA nodes. Decode streams every weight once
//! per token, so on a two-socket server a model whose pages all sit on one node runs at that
//! node's bandwidth while the other's idles. Interleaving spreads the pages (the mapped
//! weights' page cache included: file pages are placed by the policy of the thread that
//! first touches them) over every node, as `numactl --interleave=all` does.
//!
//! The policy is a thread's and is inherited by threads it starts, so set it before the
//! kernel pool exists and before the weights are first read.

/// The online NUMA nodes (from sysfs), or `None` where the kernel reports none.
pub fn nodes() -> Option<Vec<usize>> {
    let s = std::fs::read_to_string("/sys/devices/system/node/online").ok()?;
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let mut it = part.split('-').map(|v| v.trim().parse::<usize>());
        match (it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b))) => out.extend(a..=b),
            (Some(Ok(a)), None) => out.push(a),
            _ => return None,
        }
    }
    Some(out)
}

/// Interleave the calling thread's (and its future threads') memory over every online
/// node. Returns how many nodes, or why not.
pub fn interleave_all() -> Result<usize, String> {
    let nodes =
        nodes().ok_or("this system reports no NUMA nodes (/sys/devices/system/node/online)")?;
    let max = nodes.iter().max().map_or(0, |m| m + 1);
    let mut mask = vec![0u64; max.div_ceil(64).max(1)];
    for n in &nodes {
        mask[n / 64] |= 1 << (n % 64);
    }
    sys::set_mempolicy(sys::MPOL_INTERLEAVE, &mask)?;
    Ok(nodes.len())
}

/// The calling thread's memory policy mode (`sys::MPOL_*`), for reports and tests.
pub fn current_mode() -> Result<i32, String> {
    sys::get_mempolicy_mode()
}

pub use sys::{MPOL_DEFAULT, MPOL_INTERLEAVE};

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod sys {
    pub const MPOL_DEFAULT: i32 = 0;
    pub const MPOL_INTERLEAVE: i32 = 3;

    #[cfg(target_arch = "x86_64")]
    const SET: i64 = 238;
    #[cfg(target_arch = "x86_64")]
    const GET: i64 = 239;
    #[cfg(target_arch = "aarch64")]
    const SET: i64 = 237;
    #[cfg(target_arch = "aarch64")]
    const GET: i64 = 236;

    unsafe extern "C" {
        fn syscall(num: i64, ...) -> i64;
    }

    fn errno() -> String {
        std::io::Error::last_os_error().to_string()
    }

    pub fn set_mempolicy(mode: i32, mask: &[u64]) -> Result<(), String> {
        // SAFETY: set_mempolicy(mode, nodemask, maxnode) reads maxnode bits of `mask`.
        let r = unsafe { syscall(SET, mode as i64, mask.as_ptr(), (mask.len() * 64) as u64) };
        if r == 0 {
            Ok(())
        } else {
            Err(format!("set_mempolicy: {}", errno()))
        }
    }

    pub fn get_mempolicy_mode() -> Result<i32, String> {
        let mut mode: i32 = -1;
        // SAFETY: get_mempolicy(&mode, NULL, 0, NULL, 0) writes only `mode`.
        let r = unsafe {
            syscall(
                GET,
                &mut mode as *mut i32,
                std::ptr::null_mut::<u64>(),
                0u64,
                std::ptr::null_mut::<u8>(),
                0u64,
            )
        };
        if r == 0 {
            Ok(mode)
        } else {
            Err(format!("get_mempolicy: {}", errno()))
        }
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod sys {
    pub const MPOL_DEFAULT: i32 = 0;
    pub const MPOL_INTERLEAVE: i32 = 3;

    pub fn set_mempolicy(_mode: i32, _mask: &[u64]) -> Result<(), String> {
        Err("memory policies are a Linux feature".into())
    }

    pub fn get_mempolicy_mode() -> Result<i32, String> {
        Err("memory policies are a Linux feature".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread of its own (the policy is per thread): interleaving over the online
    /// nodes takes, and is what the kernel then reports; the thread it starts inherits it.
    #[test]
    fn interleave_takes_and_is_inherited() {
        std::thread::spawn(|| {
            let Some(nodes) = nodes() else {
                eprintln!("skipped: no NUMA information on this system");
                return;
            };
            assert!(!nodes.is_empty());
            assert_eq!(current_mode(), Ok(MPOL_DEFAULT));
            assert_eq!(interleave_all(), Ok(nodes.len()));
            assert_eq!(current_mode(), Ok(MPOL_INTERLEAVE));
            let child = std::thread::spawn(current_mode).join().unwrap();
            assert_eq!(
                child,
                Ok(MPOL_INTERLEAVE),
                "threads started after inherit it"
            );
        })
        .join()
        .unwrap();
        // the test's own thread is untouched
        if nodes().is_some() {
            assert_eq!(current_mode(), Ok(MPOL_DEFAULT));
        }
    }
}
