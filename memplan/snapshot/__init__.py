"""Input: sysfs trees and live machines (``/sys``, ``/proc/kpageflags``),
the evidence a snapshot holds and the confidence of verdicts made from it."""
