;; Hook `wat-upper`, written by hand as a core WebAssembly module: it
;; upper-cases the ASCII letters a client sends and passes the server's
;; bytes. The canonical ABI of the `hook` interface (wit/plugin.wit) is
;; spelled out below; the README beside this file turns the module into a
;; component.
(module
  ;; Sessions are the component's own resource: a new one is made here.
  (import "[export]refractium:plugin/hook@0.1.0" "[resource-new]session" (func $session_new (param i32) (result i32)))

  (memory (export "memory") 1)

  ;; Plugin name and version, for `init`.
  (data (i32.const 16) "wat-upper")
  (data (i32.const 32) "0.1.0")

  ;; A bump allocator above 1 KiB, reset after each call.
  (global $next (mut i32) (i32.const 1024))

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $at i32)
    (local.set $at
      (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $next (i32.add (local.get $at) (local.get $size)))
    (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.div_u (i32.add (i32.sub (global.get $next) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65535))
                           (i32.const 65536)))
              (i32.const -1))
          (then unreachable))))
    (if (i32.ne (local.get $old) (i32.const 0))
      (then (memory.copy (local.get $at) (local.get $old) (local.get $old_size))))
    (local.get $at))

  (func $reset (param i32)
    (global.set $next (i32.const 1024)))

  ;; init(config: string) -> result<plugin-info, string>, at 64: tag 0
  ;; (ok), then name and version as (pointer, length) pairs.
  (func (export "refractium:plugin/hook@0.1.0#init") (param i32 i32) (result i32)
    (i32.store8 (i32.const 64) (i32.const 0))
    (i32.store (i32.const 68) (i32.const 16))
    (i32.store (i32.const 72) (i32.const 9))
    (i32.store (i32.const 76) (i32.const 32))
    (i32.store (i32.const 80) (i32.const 5))
    (i32.const 64))

  ;; The session's constructor: its arguments (peer, detection, route) are
  ;; more than 16 flat values, so they come as one pointer; this hook keeps
  ;; no state, and every session is rep 1.
  (func (export "refractium:plugin/hook@0.1.0#[constructor]session") (param $args i32) (result i32)
    (call $session_new (i32.const 1)))

  ;; on-data(self, direction, data) -> action, at 128. The action's tag:
  ;; 0 forward, 1 respond, 2 close, 3 pass; a list payload is (pointer,
  ;; length) at offset 4. `data` is in this module's memory, so it is
  ;; changed in place and handed back.
  (func (export "refractium:plugin/hook@0.1.0#[method]session.on-data")
    (param $self i32) (param $direction i32) (param $data i32) (param $len i32) (result i32)
    (local $i i32) (local $byte i32)
    (if (i32.eq (local.get $direction) (i32.const 1))
      (then
        ;; server-to-client: pass this chunk and the rest.
        (i32.store8 (i32.const 128) (i32.const 3))
        (i32.store (i32.const 132) (local.get $data))
        (i32.store (i32.const 136) (local.get $len))
        (return (i32.const 128))))
    (block $done
      (loop $each
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $byte (i32.load8_u (i32.add (local.get $data) (local.get $i))))
        (if (i32.and (i32.ge_u (local.get $byte) (i32.const 97)) (i32.le_u (local.get $byte) (i32.const 122)))
          (then
            (i32.store8 (i32.add (local.get $data) (local.get $i)) (i32.sub (local.get $byte) (i32.const 32)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (i32.store8 (i32.const 128) (i32.const 0))
    (i32.store (i32.const 132) (local.get $data))
    (i32.store (i32.const 136) (local.get $len))
    (i32.const 128))

  ;; on-end(self, direction) -> action: nothing held, nothing more.
  (func (export "refractium:plugin/hook@0.1.0#[method]session.on-end") (param i32 i32) (result i32)
    (i32.store8 (i32.const 128) (i32.const 0))
    (i32.store (i32.const 132) (i32.const 0))
    (i32.store (i32.const 136) (i32.const 0))
    (i32.const 128))

  ;; A session's end: nothing to free.
  (func (export "refractium:plugin/hook@0.1.0#[dtor]session") (param i32))

  (export "cabi_post_refractium:plugin/hook@0.1.0#init" (func $reset))
  (export "cabi_post_refractium:plugin/hook@0.1.0#[method]session.on-data" (func $reset))
  (export "cabi_post_refractium:plugin/hook@0.1.0#[method]session.on-end" (func $reset))
)
