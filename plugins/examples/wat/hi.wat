;; Detector `wat-hi`, written by hand as a core WebAssembly module: it
;; matches clients whose first bytes are `WAT!`. The canonical ABI of the
;; `detector` interface (wit/plugin.wit) is spelled out below; the README
;; beside this file turns the module into a component.
(module
  (memory (export "memory") 1)

  ;; Plugin name and version, for `init`.
  (data (i32.const 16) "wat-hi")
  (data (i32.const 32) "0.1.0")
  ;; What the client must start with.
  (data (i32.const 48) "WAT!")

  ;; Where the host's arguments go: a bump allocator above 1 KiB, reset
  ;; after each call (the `cabi_post_*` exports).
  (global $next (mut i32) (i32.const 1024))

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $at i32)
    ;; Round up to the alignment (a power of two).
    (local.set $at
      (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (global.set $next (i32.add (local.get $at) (local.get $size)))
    ;; Grow the memory when the new end is past it.
    (if (i32.gt_u (global.get $next) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.div_u (i32.add (i32.sub (global.get $next) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65535))
                           (i32.const 65536)))
              (i32.const -1))
          (then unreachable))))
    ;; A reallocation copies what was there.
    (if (i32.ne (local.get $old) (i32.const 0))
      (then (memory.copy (local.get $at) (local.get $old) (local.get $old_size))))
    (local.get $at))

  ;; init(config: string) -> result<plugin-info, string>, returned in memory
  ;; at 64: tag 0 (ok), then name and version as (pointer, length) pairs.
  (func (export "refractium:plugin/detector@0.1.0#init") (param $config i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 64) (i32.const 0))
    (i32.store (i32.const 68) (i32.const 16))
    (i32.store (i32.const 72) (i32.const 6))
    (i32.store (i32.const 76) (i32.const 32))
    (i32.store (i32.const 80) (i32.const 5))
    (i32.const 64))

  ;; detect(data: list<u8>, peer: peer) -> verdict, returned in memory at
  ;; 128. The verdict's tag: 0 matched, 1 need-more, 2 no-match; its payload
  ;; starts at offset 4. A detection is protocol (pointer, length),
  ;; sni (tag, pointer, length), alpn (pointer, count), attributes
  ;; (pointer, count). The peer (three strings and the transport) is not
  ;; looked at.
  (func (export "refractium:plugin/detector@0.1.0#detect")
    (param $data i32) (param $len i32)
    (param $client i32) (param $client_len i32) (param $local i32) (param $local_len i32)
    (param $listener i32) (param $listener_len i32) (param $transport i32)
    (result i32)
    (local $i i32)
    ;; Compare the bytes there are with the start of `WAT!`.
    (block $differ
      (loop $next_byte
        (br_if $differ
          (i32.ge_u (local.get $i) (select (local.get $len) (i32.const 4) (i32.lt_u (local.get $len) (i32.const 4)))))
        (if (i32.ne (i32.load8_u (i32.add (local.get $data) (local.get $i)))
                    (i32.load8_u (i32.add (i32.const 48) (local.get $i))))
          (then
            ;; no-match
            (i32.store8 (i32.const 128) (i32.const 2))
            (return (i32.const 128))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next_byte)))
    (if (i32.lt_u (local.get $len) (i32.const 4))
      (then
        ;; need-more(4)
        (i32.store8 (i32.const 128) (i32.const 1))
        (i32.store (i32.const 132) (i32.const 4))
        (return (i32.const 128))))
    ;; matched: protocol "wat-hi", no SNI, no ALPN, no attributes.
    (i32.store8 (i32.const 128) (i32.const 0))
    (i32.store (i32.const 132) (i32.const 16))
    (i32.store (i32.const 136) (i32.const 6))
    (i32.store8 (i32.const 140) (i32.const 0))
    (i32.store (i32.const 152) (i32.const 0))
    (i32.store (i32.const 156) (i32.const 0))
    (i32.store (i32.const 160) (i32.const 0))
    (i32.store (i32.const 164) (i32.const 0))
    (i32.const 128))

  (func (export "cabi_post_refractium:plugin/detector@0.1.0#init") (param i32)
    (global.set $next (i32.const 1024)))
  (func (export "cabi_post_refractium:plugin/detector@0.1.0#detect") (param i32)
    (global.set $next (i32.const 1024)))
)
