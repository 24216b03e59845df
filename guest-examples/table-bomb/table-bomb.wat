;; table-bomb: an adversarial guest that grows a table, written as a core module because Rust
;; cannot emit `table.grow`. The tests turn it into a component of the `kiln:task/task` world
;; (embedding the world's type information and encoding it, as `wasm-tools component embed` and
;; `component new` do); by hand:
;;
;;     wasm-tools component embed ../../wit --world task table-bomb.wat -o table-bomb.core.wasm
;;     wasm-tools component new table-bomb.core.wasm -o table_bomb.wasm
;;
;; It offers one task, `table-bomb`. Its payload is a JSON number of table elements to reach
;; (the run completes with that number as its output); any other payload grows the table without
;; end, so the host's table limit must stop it.
;;
;; The module implements the canonical ABI by hand:
;; - `definitions` returns a pointer to (list pointer, length); the one task-definition record
;;   holds its id string first and `none` (zero) in every other field.
;; - `run` takes its parameters through a pointer (they flatten to more than 16 values): the
;;   task id string at offset 0, the payload string at offset 8. It returns a pointer to a
;;   `result<json, task-error>`: the discriminant byte at 0, the ok string at 4.
(module
  (memory (export "memory") 1)
  (table $bomb 1 funcref)
  ;; Next free byte of the bump allocator behind `cabi_realloc`.
  (global $heap (mut i32) (i32.const 1024))

  (data (i32.const 16) "table-bomb")
  ;; definitions' return area: the list at 128, one element.
  (data (i32.const 64) "\80\00\00\00\01\00\00\00")
  ;; The task-definition record: id = (16, 10); every option after it stays zero (none).
  (data (i32.const 128) "\10\00\00\00\0a\00\00\00")

  (func (export "cabi_realloc")
    (param $old i32) (param $old_size i32) (param $align i32) (param $new_size i32)
    (result i32)
    (local $ptr i32)
    (local $end i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $ptr) (local.get $new_size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.shr_u
                  (i32.add
                    (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
                    (i32.const 65535))
                  (i32.const 16)))
              (i32.const -1))
          (then unreachable))))
    (if (local.get $old)
      (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  (func (export "definitions") (result i32)
    (i32.const 64))

  (func (export "run") (param $args i32) (result i32)
    (local $payload i32)
    (local $len i32)
    (local $i i32)
    (local $byte i32)
    (local $target i64)
    (local.set $payload (i32.load offset=8 (local.get $args)))
    (local.set $len (i32.load offset=12 (local.get $args)))
    ;; The target: the payload's decimal digits (0 when it has none: grow without end).
    (block $parsed
      (loop $digits
        (br_if $parsed (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $byte (i32.load8_u (i32.add (local.get $payload) (local.get $i))))
        (if (i32.and
              (i32.ge_u (local.get $byte) (i32.const 48))
              (i32.le_u (local.get $byte) (i32.const 57)))
          (then
            (local.set $target
              (i64.add
                (i64.mul (local.get $target) (i64.const 10))
                (i64.extend_i32_u (i32.sub (local.get $byte) (i32.const 48)))))
            ;; Past 2^32 elements no table can follow; stop counting.
            (if (i64.gt_u (local.get $target) (i64.const 0xffffffff))
              (then (local.set $target (i64.const 0)) (br $parsed)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digits)))
    ;; Grow 1,000 elements at a time; a refused growth (-1) traps.
    (block $done
      (loop $grow
        (if (i64.ne (local.get $target) (i64.const 0))
          (then
            (br_if $done
              (i64.ge_u (i64.extend_i32_u (table.size $bomb)) (local.get $target)))))
        (if (i32.eq (table.grow $bomb (ref.null func) (i32.const 1000)) (i32.const -1))
          (then unreachable))
        (br $grow)))
    ;; ok(payload)
    (i32.store8 (i32.const 256) (i32.const 0))
    (i32.store (i32.const 260) (local.get $payload))
    (i32.store (i32.const 264) (local.get $len))
    (i32.const 256))
)
