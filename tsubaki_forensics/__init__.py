"""tsubaki-forensics: kernel-crash forensics after the Tsubaki monitor design.

The data path, one folder per step (see README.md, "Architecture"):

    crash lab (lab/) or a vmcore (vmcore/)  ->  monitor emulation (monitor_model/)
    ->  .tsd dump format (tsd/)  ->  reassembled physical memory (tsd.memory)
    ->  drgn program (drgn_bridge/)  ->  analysis plugins (plugin_system/, plugins/)
    ->  renderers (render/)  ->  CLI (cli/)
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
