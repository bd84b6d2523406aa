"""Every formula of the book as a pure function (DESIGN.md section 3.1).

The names and semantics are a fixed contract: the book, its exercises and the
tests refer to them. Row-vector convention (``x @ W``), as in the book.
Implementations live in one module per chapter and are re-exported here.
"""
