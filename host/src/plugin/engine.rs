//! The process-wide wasmtime engine (its epoch is advanced by [`super::watchdog`]).

use std::sync::OnceLock;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The largest memory cap `plugins.limits.memory` may ask for.
pub const MAX_MEMORY: u64 = 64 << 20;

/// Address space reserved per linear memory: all of wasm32's 4 GiB, so that
/// no guest load or store needs a bounds check — an address past the
/// memory's end lands in pages that are not mapped, and the fault is the
/// trap. With a reservation of [`MAX_MEMORY`] instead, every access
/// compares its address first: a built-in's `detect` ran 23 % more
/// instructions (8,190 against 6,318 per call on an HTTP request, counted
/// by callgrind). The reservation is address space only (no memory, no
/// page tables; see [`MEMORY_SLOTS`]). Where even that cannot be had (`ulimit -v`), the engine
/// falls back to [`MAX_MEMORY`] with bounds checks.
const RESERVATION: u64 = 4 << 30;

/// Concurrent component instances the pooling allocator has slots for.
/// Detector calls never yield, so at most one instance per plugin per worker
/// thread is busy at a time; each hooked connection holds one instance per
/// hook for as long as it lasts, so this bounds concurrent hooked
/// connections.
pub const INSTANCE_SLOTS: u32 = 10_000;
/// Linear memories the pool reserves address space for ([`RESERVATION`]
/// each): components built from one core module have one memory, so this
/// leaves room for some with two, in about 47 TiB of the 128 TiB a process
/// may address.
const MEMORY_SLOTS: u32 = INSTANCE_SLOTS + INSTANCE_SLOTS / 5;

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// The engine, created on first use.
pub fn engine() -> &'static Engine {
    ENGINE.get_or_init(|| {
        let tries = [
            (RESERVATION, "cannot reserve 4 GiB of address space per plugin memory; plugins run with bounds checks"),
            (MAX_MEMORY, "pooling allocator unavailable; using on-demand allocation"),
        ];
        for (reservation, fallback) in tries {
            match Engine::new(&config(true, reservation)) {
                Ok(engine) => return engine,
                Err(err) => tracing::warn!(error = %err, "{fallback}"),
            }
        }
        match Engine::new(&config(false, MAX_MEMORY)) {
            Ok(engine) => engine,
            Err(err) => panic!("cannot create the WebAssembly engine: {err:#}"),
        }
    })
}

fn config(pooling: bool, reservation: u64) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .epoch_interruption(true)
        .parallel_compilation(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(1 << 20)
        .memory_reservation(reservation)
        .memory_guard_size(2 << 20)
        .memory_reservation_for_growth(0);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(INSTANCE_SLOTS)
            .total_core_instances(INSTANCE_SLOTS * 4)
            .total_memories(MEMORY_SLOTS)
            .total_tables(INSTANCE_SLOTS * 4)
            .max_memory_size(MAX_MEMORY as usize)
            .table_elements(20_000)
            .total_stacks(INSTANCE_SLOTS)
            .max_unused_warm_slots(64);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// A short text that changes whenever compiled artifacts stop being
/// compatible: the wasmtime version and the engine's settings.
pub fn fingerprint() -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine().precompile_compatibility_hash().hash(&mut hasher);
    format!("wasmtime-{}-{:016x}", wasmtime_version(), hasher.finish())
}

/// The wasmtime version this binary links.
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}
