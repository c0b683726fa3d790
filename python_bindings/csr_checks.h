// Topology checks every kind stored as a CSR plus its transposed view shares
// (1xN blocks, stripes): the CSR invariants, and that the transposed view is
// exactly the one the CSR implies. Generic over how an entry's column of the
// transposed view is computed from its row and its CSR column index, with the
// field names of the messages passed in. Errors are ValueError in Python.
#pragma once
#include <torch/extension.h>

#include <cstdint>

#include "conv_glue.h"

namespace sparsekernels {
namespace glue {

// Field names of one CSR and its transpose, as the messages print them.
struct CsrNames {
  const char* row_ptr;     // "row_ptr"
  const char* col_idx;     // "col_idx" / "tap_idx"
  const char* nnz;         // "nnzb" / "nnz"
  const char* cols_meaning;  // "input channels per group" / "kernel positions Kh*Kw"
  const char* col_ptr;     // "col_ptr" / "tap_ptr"
  const char* entry;       // "block" / "stripe"
  const char* transposed;  // "col_ptr/block_idx/block_row"
  const char* csr;         // "row_ptr/col_idx"
  const char* rebuild;     // "Block1xN.topology()"
};

// The CSR invariants every kernel relies on: row_ptr runs from 0 to nnz
// without decreasing; col_idx is in [0, cols) and strictly increasing within a
// row. Messages match sparsekernels/formats/csr.py.
inline void check_csr(const HostInts& row_ptr, const HostInts& col_idx, int64_t cols,
                      const CsrNames& n) {
  const int64_t rows = row_ptr.size - 1;
  TORCH_CHECK_VALUE(row_ptr[0] == 0, n.row_ptr, ": must start at 0, starts at ", row_ptr[0]);
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK_VALUE(row_ptr[r + 1] >= row_ptr[r], n.row_ptr, ": decreases at row ", r);
  }
  TORCH_CHECK_VALUE(row_ptr[rows] == col_idx.size, n.row_ptr, ": must end at ", n.nnz, "=",
                    col_idx.size, ", ends at ", row_ptr[rows]);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = row_ptr[r]; j < row_ptr[r + 1]; ++j) {
      TORCH_CHECK_VALUE(col_idx[j] >= 0 && col_idx[j] < cols, n.col_idx, ": entry ", j, " = ",
                        col_idx[j], " is out of range [0, ", cols, ") (", n.cols_meaning, ")");
      TORCH_CHECK_VALUE(j == row_ptr[r] || col_idx[j] > col_idx[j - 1], n.col_idx,
                        ": not strictly increasing within row ", r, " (entry ", j, " = ",
                        col_idx[j], " after ", col_idx[j - 1], ")");
    }
  }
}

// The transposed view (col_ptr, entry_idx, entry_row) must be exactly the one
// the CSR implies: per column, the entries of that column in increasing row
// order, column(row, col_idx) naming an entry's column. Checked in one pass,
// without rebuilding it: col_ptr runs from 0 to nnz; every entry names an
// entry of its row and of its column; rows increase within a column. Then the
// nnz entries are nnz distinct entries, in the derived order. The CSR must
// have passed check_csr.
template <typename ColumnOf>
void check_transpose(const HostInts& row_ptr, const HostInts& col_idx, const HostInts& col_ptr,
                     const HostInts& entry_idx, const HostInts& entry_row, ColumnOf&& column,
                     const CsrNames& n) {
  const int64_t rows = row_ptr.size - 1, cols = col_ptr.size - 1, nnz = col_idx.size;
  // what: the pieces of the failed condition's description, then " at <at>".
  auto require = [&](bool ok, int64_t at, const auto&... what) {
    TORCH_CHECK_VALUE(ok, n.transposed, ": not the transpose of ", n.csr, " (", what...,
                      " at ", at, "; rebuild them with ", n.rebuild, ")");
  };
  require(col_ptr[0] == 0 && col_ptr[cols] == nnz, 0, n.col_ptr, " must run from 0 to ",
          n.nnz, ", entry");
  for (int64_t c = 0; c < cols; ++c) {
    require(col_ptr[c + 1] >= col_ptr[c], c, n.col_ptr, " decreases, column");
  }
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t j = col_ptr[c]; j < col_ptr[c + 1]; ++j) {
      const int64_t e = entry_idx[j], r = entry_row[j];
      require(e >= 0 && e < nnz && r >= 0 && r < rows, j, "index out of range, entry");
      require(e >= row_ptr[r] && e < row_ptr[r + 1], j, n.entry, " not in its row, entry");
      require(column(r, col_idx[e]) == c, j, n.entry, " not in its column, entry");
      require(j == col_ptr[c] || r > entry_row[j - 1], j, "rows not increasing, entry");
    }
  }
}

}  // namespace glue
}  // namespace sparsekernels
