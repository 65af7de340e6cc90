;; Mandelbrot escape counts, one element per image row.
;;
;;   entry:mandelbrot_rows(start, end, int32_t *image, uint32_t width,
;;                         uint32_t max_iter, double x0, double dx, double y0, double dy)
;;
;; image is height x width i32 iteration counts, row-major; rows start..end-1
;; are written. Pixel (row, col) is c = (x0 + col*dx) + (y0 + row*dy)i. All
;; float math is f64 without fused operations, in the order a numpy float64
;; reference uses, so the counts match it exactly. A row costs anything from a few to width*max_iter
;; iterations, which is what makes a static split uneven.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "entry:mandelbrot_rows") (param $start i32) (param $end i32)
    (param $image i32) (param $width i32) (param $max i32)
    (param $x0 f64) (param $dx f64) (param $y0 f64) (param $dy f64)
    (local $row i32) (local $col i32) (local $out i32) (local $n i32)
    (local $cr f64) (local $ci f64) (local $zr f64) (local $zi f64) (local $zr2 f64) (local $zi2 f64)
    (local.set $row (local.get $start))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $end)))
        (local.set $ci
          (f64.add (local.get $y0) (f64.mul (f64.convert_i32_u (local.get $row)) (local.get $dy))))
        (local.set $out
          (i32.add
            (local.get $image)
            (i32.shl (i32.mul (local.get $row) (local.get $width)) (i32.const 2))))
        (local.set $col (i32.const 0))
        (block $cols_done
          (loop $cols
            (br_if $cols_done (i32.ge_u (local.get $col) (local.get $width)))
            (local.set $cr
              (f64.add (local.get $x0) (f64.mul (f64.convert_i32_u (local.get $col)) (local.get $dx))))
            (local.set $zr (f64.const 0))
            (local.set $zi (f64.const 0))
            (local.set $n (i32.const 0))
            (block $escaped
              (loop $iterate
                (br_if $escaped (i32.ge_u (local.get $n) (local.get $max)))
                (local.set $zr2 (f64.mul (local.get $zr) (local.get $zr)))
                (local.set $zi2 (f64.mul (local.get $zi) (local.get $zi)))
                (br_if $escaped (f64.gt (f64.add (local.get $zr2) (local.get $zi2)) (f64.const 4)))
                ;; zi = (zr + zr) * zi + ci;  zr = (zr2 - zi2) + cr
                (local.set $zi
                  (f64.add
                    (f64.mul (f64.add (local.get $zr) (local.get $zr)) (local.get $zi))
                    (local.get $ci)))
                (local.set $zr (f64.add (f64.sub (local.get $zr2) (local.get $zi2)) (local.get $cr)))
                (local.set $n (i32.add (local.get $n) (i32.const 1)))
                (br $iterate)))
            (i32.store (local.get $out) (local.get $n))
            (local.set $out (i32.add (local.get $out) (i32.const 4)))
            (local.set $col (i32.add (local.get $col) (i32.const 1)))
            (br $cols)))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))
  (@custom "sharedwasm.entries"
    "{\"version\": 1, \"entries\": {\"mandelbrot_rows\": ["
    "{\"name\": \"image\", \"type\": \"int32_t *\", \"canonical\": \"int *\"}, "
    "{\"name\": \"width\", \"type\": \"uint32_t\", \"canonical\": \"unsigned int\"}, "
    "{\"name\": \"max_iter\", \"type\": \"uint32_t\", \"canonical\": \"unsigned int\"}, "
    "{\"name\": \"x0\", \"type\": \"double\"}, {\"name\": \"dx\", \"type\": \"double\"}, "
    "{\"name\": \"y0\", \"type\": \"double\"}, {\"name\": \"dy\", \"type\": \"double\"}]}}"))
