"""Test helpers shared by the checkpoint and fault-injection tests."""

import errno
import io
import os


class FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes: the write that does not fit writes
    what fits and raises ENOSPC, as the OS does."""

    room = 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        fits = max(0, FullDisk.room - self.tell())
        if len(data) > fits:
            super().write(data[:fits])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)
