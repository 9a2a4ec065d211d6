"""The gallery: discovered designs exported with their checkpoints, restorable as models.

    from aira_jax import gallery
    gallery.export_design(store, 'gdn-v2', 'runs/gallery')   # or export_top(store, 'runs/gallery', k=5)
    run = gallery.restore_entry('runs/gallery', 'gdn-v2')    # LoadedRun: model + tokenizer + config
    gallery.import_asi_arch('106.json', 'runs/gallery')      # ASI-Arch's published designs (not runnable)

Command line: `python -m aira_jax.gallery list|show|export|restore|import-asi-arch` (see __main__.py).
"""
from aira_jax.gallery.asi_arch import (AsiArchError, AsiArchRecord, asi_arch_cognition, import_asi_arch,
                                       load_asi_arch, write_cognition_jsonl)
from aira_jax.gallery.entry import (ENTRY_FILE, SCHEMA_VERSION, EntryFormatError, GalleryEntry, GalleryError,
                                    default_gallery_dir, load_entry, read_entry, read_source, scan_gallery,
                                    write_entry)
from aira_jax.gallery.export import choose_run, export_design, export_top
from aira_jax.gallery.restore import param_count, restore_entry, text_logits, top_predictions

__all__ = [
    'ENTRY_FILE', 'SCHEMA_VERSION', 'AsiArchError', 'AsiArchRecord', 'EntryFormatError', 'GalleryEntry',
    'GalleryError', 'asi_arch_cognition', 'choose_run', 'default_gallery_dir', 'export_design', 'export_top',
    'import_asi_arch', 'load_asi_arch', 'load_entry', 'param_count', 'read_entry', 'read_source',
    'restore_entry', 'scan_gallery', 'text_logits', 'top_predictions', 'write_cognition_jsonl', 'write_entry',
]
