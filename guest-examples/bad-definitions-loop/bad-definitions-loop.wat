;; bad-definitions-loop: a component whose `definitions()` never returns. A deploy must refuse it
;; (the call runs out of its fuel) and store nothing. Assembled into a component by the tests, as
;; table-bomb.wat is.
(module
  (memory (export "memory") 1)
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (i32.const 1024))
  (func (export "definitions") (result i32)
    (loop $forever (br $forever))
    unreachable)
  (func (export "run") (param i32) (result i32)
    unreachable)
)
