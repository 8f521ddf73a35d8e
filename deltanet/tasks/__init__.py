"""MAD task registry (filled in by the tasks issue): ids, display names of the reference table."""

# Column order of the reference table (../shared/reference/reported_accuracies.csv).
DISPLAY_NAMES = {
    "compression": "Compress",
    "context_recall": "Context Recall",
    "fuzzy_recall": "Fuzzy Recall",
    "memorization": "Memorize",
    "noisy_recall": "Noisy Recall",
    "selective_copy": "Selective Copy",
}
TASK_IDS = tuple(DISPLAY_NAMES)
