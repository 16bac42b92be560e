use super::{Builder, Interest, Runtime, TcpListener, TcpStream, spawn, timeout, yield_to_io};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime() -> Runtime {
    Builder::new().build().expect("an epoll instance and an eventfd")
}

fn listener() -> TcpListener {
    let std = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    std.set_nonblocking(true).expect("non-blocking");
    TcpListener::from_std(std).expect("register")
}

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let std = std::net::TcpStream::connect(addr).expect("connect loopback");
    std.set_nonblocking(true).expect("non-blocking");
    TcpStream::from_std(std).expect("register")
}

#[test]
fn spawned_tasks_run_in_order_and_block_on_returns_its_output() {
    let rt = runtime();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let out = rt.block_on({
        let seen = seen.clone();
        async move {
            for i in 0..3 {
                let seen = seen.clone();
                spawn(async move { seen.borrow_mut().push(i) });
            }
            yield_to_io().await;
            42
        }
    });
    assert_eq!(out, 42);
    assert_eq!(*seen.borrow(), vec![0, 1, 2]);
}

#[test]
fn a_waker_called_from_another_thread_wakes_the_loop() {
    let rt = runtime();
    let (give, take) = mpsc::channel::<std::task::Waker>();
    let waker_thread = std::thread::spawn(move || {
        let waker = take.recv_timeout(Duration::from_secs(10)).expect("the task's waker");
        std::thread::sleep(Duration::from_millis(50));
        waker.wake();
    });
    let started = Instant::now();
    // Bounded, so that a wake that does not reach the loop fails the test
    // instead of hanging it.
    let woken = rt.block_on(async move {
        let mut sent = false;
        let wait = std::future::poll_fn(|cx| {
            if sent {
                return std::task::Poll::Ready(());
            }
            sent = true;
            give.send(cx.waker().clone()).expect("the waking thread is there");
            std::task::Poll::Pending
        });
        timeout(Duration::from_secs(10), wait).await
    });
    assert_eq!(woken, Ok(()), "the remote wake did not reach the loop");
    assert!(started.elapsed() < Duration::from_secs(10));
    waker_thread.join().expect("the waking thread ends");
}

#[test]
fn another_thread_spawns_onto_the_loop() {
    let rt = runtime();
    let handle = rt.handle();
    let (done, finished) = tokio::sync::oneshot::channel::<std::thread::ThreadId>();
    std::thread::spawn(move || {
        handle.spawn(move || async move {
            done.send(std::thread::current().id()).ok();
        })
    });
    let ran_on = rt.block_on(async move { timeout(Duration::from_secs(10), finished).await });
    assert_eq!(ran_on.expect("in time").expect("sent"), std::thread::current().id());
}

#[test]
fn timers_fire_in_deadline_order_and_a_ready_future_needs_no_timer() {
    let rt = runtime();
    let order = Rc::new(RefCell::new(Vec::new()));
    rt.block_on({
        let order = order.clone();
        async move {
            for (name, ms) in [("late", 60u64), ("early", 20), ("middle", 40)] {
                let order = order.clone();
                spawn(async move {
                    super::sleep(Duration::from_millis(ms)).await;
                    order.borrow_mut().push(name);
                });
            }
            assert_eq!(timeout(Duration::from_millis(1), async { 7 }).await, Ok(7));
            assert_eq!(super::core().timers.until_next(), None, "a ready future armed a timer");
            let late = async {
                super::sleep(Duration::from_millis(10)).await;
                8
            };
            assert_eq!(timeout(Duration::from_secs(10), late).await, Ok(8));
            yield_to_io().await;
            assert!(super::core().timers.until_next().is_some(), "the sleepers' timers are set");
            let started = Instant::now();
            let slow = timeout(Duration::from_millis(30), super::sleep(Duration::from_secs(30))).await;
            assert_eq!(slow, Err(super::Elapsed));
            assert!(started.elapsed() >= Duration::from_millis(30));
            super::sleep(Duration::from_millis(80)).await;
        }
    });
    assert_eq!(*order.borrow(), vec!["early", "middle", "late"]);
}

#[test]
fn a_dropped_timer_leaves_the_loop() {
    let rt = runtime();
    rt.block_on(async {
        let slow = timeout(Duration::from_millis(10), super::sleep(Duration::from_secs(3600))).await;
        assert!(slow.is_err());
        // The hour-long sleep was dropped with its timeout: no timer is left
        // to keep the loop's next wait short or long.
        assert_eq!(super::core().timers.until_next(), None);
    });
}

#[test]
fn bytes_and_end_of_stream_cross_a_loopback_connection() {
    let rt = runtime();
    rt.block_on(async {
        let listener = listener();
        let addr = listener.local_addr().expect("address");
        spawn(async move {
            let (mut server, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.expect("read to the client's FIN");
            server.write_all(&got).await.expect("echo");
            server.shutdown().await.expect("FIN");
        });
        let mut client = connect(addr);
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut back = Vec::new();
        let exchange = async {
            client.write_all(&sent).await.expect("write");
            client.shutdown().await.expect("FIN");
            client.read_to_end(&mut back).await.expect("read the echo");
        };
        timeout(Duration::from_secs(10), exchange).await.expect("the echo in time");
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "the echo differs");
    });
}

#[test]
fn readiness_tells_the_fin_and_waits_again_after_would_block() {
    let rt = runtime();
    rt.block_on(async {
        let listener = listener();
        let mut client = connect(listener.local_addr().expect("address"));
        let (server, _) = listener.accept().await.expect("accept");
        // Nothing was sent: a read says "would block" (the socket counts as
        // ready for nothing until the loop has looked at it), and the wait
        // is for a real event.
        let mut buf = [0u8; 16];
        assert_eq!(server.try_read(&mut buf).map_err(|e| e.kind()), Err(std::io::ErrorKind::WouldBlock));
        assert!(timeout(Duration::from_millis(50), server.readable()).await.is_err(), "nothing was sent");
        client.write_all(b"hi").await.expect("write");
        client.shutdown().await.expect("FIN");
        let ready =
            timeout(Duration::from_secs(10), server.ready(Interest::READABLE)).await.expect("in time").expect("ready");
        assert!(ready.is_readable() && ready.is_read_closed() && !ready.is_error());
        assert_eq!(server.try_read(&mut buf).expect("read"), 2);
        assert_eq!(server.try_read(&mut buf).expect("end of stream"), 0);
    });
}

#[test]
fn many_connections_come_and_go_without_leaving_anything_behind() {
    // Sockets leave the epoll set by being closed, with no epoll_ctl:
    // descriptors are reused at once, and each reuse must register cleanly.
    let rt = runtime();
    rt.block_on(async {
        let listener = listener();
        let addr = listener.local_addr().expect("address");
        for round in 0..300u32 {
            let mut client = connect(addr);
            let (mut server, _) =
                timeout(Duration::from_secs(10), listener.accept()).await.expect("in time").expect("accept");
            client.write_all(&round.to_be_bytes()).await.expect("write");
            let mut got = [0u8; 4];
            timeout(Duration::from_secs(10), server.read_exact(&mut got)).await.expect("in time").expect("read");
            assert_eq!(u32::from_be_bytes(got), round);
        }
        assert!(super::core().reactor_is_empty_but_for(1), "only the listener is left");
    });
}

#[test]
fn tasks_left_running_are_dropped_with_the_runtime() {
    let rt = runtime();
    let dropped = Rc::new(RefCell::new(false));
    struct Flag(Rc<RefCell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            *self.0.borrow_mut() = true;
        }
    }
    rt.block_on({
        let flag = Flag(dropped.clone());
        async move {
            let listener = listener();
            spawn(async move {
                let _flag = flag;
                let _ = listener.accept().await;
            });
            yield_to_io().await;
        }
    });
    assert!(!*dropped.borrow());
    drop(rt);
    assert!(*dropped.borrow());
}

#[test]
fn a_task_that_panics_is_dropped_and_the_others_go_on() {
    let rt = runtime();
    let out = rt.block_on(async {
        spawn(async { panic!("a bug in one connection's task") });
        let (give, take) = tokio::sync::oneshot::channel();
        spawn(async move {
            yield_to_io().await;
            give.send(5).ok();
        });
        timeout(Duration::from_secs(10), take).await
    });
    assert_eq!(out.expect("in time").expect("sent"), 5);
}

/// What a task that panicked held is released, and its owners can tell a
/// crash from an orderly end (the access log's `internal error`).
#[test]
fn a_task_that_panics_releases_what_it_held_as_unwinding() {
    struct Probe(Rc<RefCell<Vec<bool>>>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.borrow_mut().push(super::unwinding());
        }
    }
    let rt = runtime();
    let seen = Rc::new(RefCell::new(Vec::new()));
    rt.block_on({
        let seen = seen.clone();
        async move {
            let (crashed, ended) = (Probe(seen.clone()), Probe(seen.clone()));
            spawn(async move {
                let _held = crashed;
                yield_to_io().await;
                panic!("a bug in one connection's task");
            });
            spawn(async move {
                let _held = ended;
                yield_to_io().await;
            });
            for _ in 0..3 {
                yield_to_io().await;
            }
        }
    });
    let mut seen = seen.borrow().clone();
    seen.sort();
    assert_eq!(seen, vec![false, true], "one released by a crash, one by its end");
    assert!(!super::unwinding(), "the flag does not outlive the drop");
}
