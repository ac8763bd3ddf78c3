// Process-wide allocator tuning for training processes.
#ifndef BPNAS_COMMON_MEMORY_H_
#define BPNAS_COMMON_MEMORY_H_

namespace bpnas {

// Training allocates and frees the same multi-megabyte activation tensors every step. glibc serves
// allocations that large with mmap and returns them with munmap, so every step pays page faults
// on fresh memory (measured: a quarter to a third of a CPU step on our VMs). This keeps large
// blocks on the heap and freed memory in the process, so steps reuse warm pages.
// Call once at the start of main(), before any tensor exists.
void TuneAllocatorForTraining();

}  // namespace bpnas

#endif  // BPNAS_COMMON_MEMORY_H_
