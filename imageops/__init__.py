"""Image operations shared by the artifact simulator (``data_sim``) and the refiner
(``pixperfect``): binary morphology, padding to a stride, counter-based hash noise.

The layer below both: it imports torch only, never ``data_sim`` or ``pixperfect``
(tests/test_import_cycles.py), so the shipped refiner does not depend on the simulator.
"""
