//! The process-wide wasmtime engine and its epoch ticker.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the engine's epoch advances: the granularity of call deadlines.
/// Each tick wakes a thread; 2 ms keeps that under 500 wake-ups a second
/// while plugins are being called (and none when they are not).
pub const TICK: Duration = Duration::from_millis(2);

/// The largest memory cap `plugins.limits.memory` may ask for; the pooling
/// allocator reserves this much address space per linear memory slot.
pub const MAX_MEMORY: u64 = 64 << 20;

/// Concurrent component instances the pooling allocator has slots for.
/// Detector calls never yield, so at most one instance per plugin per worker
/// thread is busy at a time; idle pools stay small.
const INSTANCE_SLOTS: u32 = 1000;

/// Ticks without any plugin call after which the ticker parks itself, so an
/// idle proxy (or one whose clients all sit in detection) uses no CPU.
const IDLE_TICKS: u32 = 100;

static ENGINE: OnceLock<Engine> = OnceLock::new();
static TICKER: OnceLock<Thread> = OnceLock::new();
/// Plugin calls in progress.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Calls started since the ticker last looked.
static STARTED: AtomicBool = AtomicBool::new(false);
/// The ticker is parked (or about to park).
static PARKED: AtomicBool = AtomicBool::new(false);

/// Marks a plugin call in progress; the epoch ticker runs while any is.
pub struct CallGuard(());

impl CallGuard {
    /// Call before setting a store's epoch deadline.
    pub fn enter() -> CallGuard {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        STARTED.store(true, Ordering::Relaxed);
        if PARKED.load(Ordering::SeqCst)
            && let Some(ticker) = TICKER.get()
        {
            ticker.unpark();
        }
        CallGuard(())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Advance the epoch every tick while plugin calls happen; park when none
/// has for [`IDLE_TICKS`] ticks. A call's deadline counts ticks from when it
/// was set, so time spent parked (with no call running) costs no budget.
fn tick(engine: Engine) {
    let mut idle = 0;
    loop {
        std::thread::sleep(TICK);
        engine.increment_epoch();
        if STARTED.swap(false, Ordering::Relaxed) || ACTIVE.load(Ordering::SeqCst) > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        PARKED.store(true, Ordering::SeqCst);
        // A call that started before it could see PARKED is seen here.
        while ACTIVE.load(Ordering::SeqCst) == 0 && !STARTED.load(Ordering::Relaxed) {
            std::thread::park();
        }
        PARKED.store(false, Ordering::SeqCst);
        idle = 0;
    }
}

/// The engine, created (with its ticker thread) on first use.
pub fn engine() -> &'static Engine {
    ENGINE.get_or_init(|| {
        let engine = match Engine::new(&config(true)) {
            Ok(engine) => engine,
            Err(err) => {
                tracing::warn!(error = %err, "pooling allocator unavailable; using on-demand allocation");
                match Engine::new(&config(false)) {
                    Ok(engine) => engine,
                    Err(err) => panic!("cannot create the WebAssembly engine: {err:#}"),
                }
            }
        };
        let ticker = engine.clone();
        match std::thread::Builder::new().name("refractium-epoch".into()).spawn(move || tick(ticker)) {
            Ok(handle) => {
                let _ = TICKER.set(handle.thread().clone());
            }
            Err(err) => panic!("cannot start the plugin deadline ticker thread: {err}"),
        }
        engine
    })
}

fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(false)
        .epoch_interruption(true)
        .parallel_compilation(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(1 << 20)
        .memory_reservation(MAX_MEMORY)
        .memory_guard_size(2 << 20)
        .memory_reservation_for_growth(0);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(INSTANCE_SLOTS)
            .total_core_instances(INSTANCE_SLOTS * 4)
            .total_memories(INSTANCE_SLOTS * 2)
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
