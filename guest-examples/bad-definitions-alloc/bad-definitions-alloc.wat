;; bad-definitions-alloc: a component whose `definitions()` allocates without end. A deploy must
;; refuse it (the deploy-time memory limit denies the growth) and store nothing. Assembled into a
;; component by the tests, as table-bomb.wat is.
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (i32.const 1024))
  (func (export "definitions") (result i32)
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable)
  (func (export "run") (param i32) (result i32)
    unreachable)
)
