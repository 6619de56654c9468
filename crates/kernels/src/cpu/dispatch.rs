//! Which instruction set the CPU kernels use, found at run time.
//!
//! Our machines differ (AMD Zen 4 with AVX-512 and BF16, Intel Xeons with AMX, older parts
//! with only AVX2), so nothing is assumed at build time: the binary carries every level and
//! picks the best the CPU reports. A level can be forced (tests, benchmarks, a suspected
//! kernel bug) through [`CpuOptions`], never through the environment.

use std::fmt;
use std::str::FromStr;

/// A kernel level, from the portable path up. Each level is a superset of the one below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Plain Rust: the oracle every SIMD kernel is tested against, and the path other
    /// architectures (aarch64) take until they get their own.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (+ the AVX2 set).
    Avx512,
    /// AVX-512 with VNNI: the int8 products use `vpdpbusd` / `vpdpwssd` (Ice Lake, Sapphire
    /// Rapids, Zen 4 and later).
    Avx512Vnni,
    /// AVX-512 VNNI and BF16 with AMX's tile unit (Sapphire Rapids and later): prefill
    /// products run on the bf16 tiles, everything else as `Avx512Vnni`. Linux
    /// enables the tiles per process on request (`arch_prctl`), made when the level is
    /// first asked about; a kernel that refuses leaves the level unsupported.
    Amx,
    /// WebAssembly SIMD128 (present when the module was built with it).
    Simd128,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Scalar,
        Level::Avx2,
        Level::Avx512,
        Level::Avx512Vnni,
        Level::Amx,
        Level::Simd128,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Avx512Vnni => "avx512vnni",
            Level::Amx => "amx",
            Level::Simd128 => "simd128",
        }
    }

    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                Level::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512Vnni => {
                Level::Avx512.supported() && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Amx => {
                Level::Avx512Vnni.supported()
                    && is_x86_feature_detected!("avx512bf16")
                    && amx::enabled()
            }
            Level::Simd128 => cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best level this CPU supports.
    pub fn detect() -> Level {
        Level::ALL
            .into_iter()
            .rev()
            .find(|l| l.supported())
            .unwrap_or(Level::Scalar)
    }

    /// Every level this CPU supports, lowest first (what the tests sweep).
    pub fn available() -> Vec<Level> {
        Level::ALL.into_iter().filter(|l| l.supported()).collect()
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                format!("unknown kernel level `{s}` (expected scalar, avx2, avx512, avx512vnni, amx or simd128)")
            })
    }
}

/// CPU features worth reporting beside the level (`deeprust info`), including those no
/// kernel uses yet, so a user can see what the machine offers.
pub fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => {$( if is_x86_feature_detected!($name) { f.push($name); } )*};
        }
        probe!(
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avxvnni"
        );
    }
    // AMX detection is not stable in std; Linux lists the flags (and enables the tiles
    // only after an arch_prctl request: see `amx::enabled`).
    #[cfg(target_os = "linux")]
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo")
        && let Some(flags) = info.lines().find(|l| l.starts_with("flags"))
    {
        {
            for (flag, name) in [
                ("amx_tile", "amx-tile"),
                ("amx_bf16", "amx-bf16"),
                ("amx_int8", "amx-int8"),
            ] {
                if flags.split_whitespace().any(|w| w == flag) {
                    f.push(name);
                }
            }
        }
    }
    f
}

/// AMX's tiles: present (CPUID) and enabled for this process.
#[cfg(target_arch = "x86_64")]
mod amx {
    use std::sync::OnceLock;

    /// CPUID leaf 7's AMX bits (EDX): BF16 22 and TILE 24 (the kernels use no INT8 tiles).
    fn cpuid_has_amx() -> bool {
        // (leaf 7 exists on every CPU with AVX-512, checked before this)
        let l = std::arch::x86_64::__cpuid_count(7, 0);
        let bits = (1 << 22) | (1 << 24);
        l.edx & bits == bits
    }

    /// Linux keeps the tile data state off until a process asks for it
    /// (`ARCH_REQ_XCOMP_PERM` for `XFEATURE_XTILEDATA`); a tile instruction before that
    /// faults. Asked once; the permission holds for every thread of the process.
    #[cfg(target_os = "linux")]
    fn request() -> bool {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        unsafe extern "C" {
            fn syscall(num: i64, ...) -> i64;
        }
        // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, feature) takes no pointers.
        unsafe { syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }

    #[cfg(not(target_os = "linux"))]
    fn request() -> bool {
        false
    }

    pub fn enabled() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| cpuid_has_amx() && request())
    }
}

/// How to build a [`super::CpuBackend`].
#[derive(Clone, Debug, Default)]
pub struct CpuOptions {
    /// Kernel level; None picks the best the CPU supports.
    pub level: Option<Level>,
    /// Worker threads including the caller; None or 0 uses every available core.
    pub threads: Option<usize>,
    /// Pin thread i to the i-th CPU of the process's affinity mask.
    pub pin_threads: bool,
    /// Prefill products of bf16 weights round the activations to bf16 and multiply with
    /// `vdpbf16ps`, as llama.cpp does, where the CPU has AVX-512 BF16 (elsewhere, and when
    /// off, activations stay f32 and the numerics are the reference's).
    pub bf16_activations: bool,
}

impl CpuOptions {
    /// The level and thread count these options give on this CPU, without starting any
    /// thread; an error if the level is not supported here.
    pub fn resolve(&self) -> Result<(Level, usize), String> {
        let level = match self.level {
            Some(l) if !l.supported() => {
                return Err(format!(
                    "kernel level `{l}` is not supported by this CPU (supported: {})",
                    Level::available()
                        .iter()
                        .map(|l| l.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Some(l) => l,
            None => Level::detect(),
        };
        let threads = match self.threads {
            Some(t) if t > 0 => t,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok((level, threads))
    }
}
