//! `skip_getattr_hook`: a class's attribute reads without the `__getattr__` it inherits.
//!
//! CPython gives a class whose MRO defines `__getattr__` an attribute slot that tries
//! `object.__getattribute__`, then `__getattr__`, and never specialises an attribute read
//! through it (a pydantic model's field read and compared: about 490 instructions, against
//! about 150 once specialised). For a class whose `__getattr__` would only raise the
//! `AttributeError` the generic read raises (the caller checks that), the generic read alone
//! is the same behaviour.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Points `cls`'s attribute slot at `object.__getattribute__`'s, skipping its `__getattr__`.
///
/// Refused (`TypeError`) for a static type or a class with a `__getattribute__` of its own.
/// Assigning or deleting `__getattr__` or `__getattribute__` on `cls` or a base later makes
/// CPython recompute the slot (the hook comes back); subclasses made later get CPython's own.
#[pyfunction]
pub(crate) fn skip_getattr_hook(cls: &Bound<'_, PyType>) -> PyResult<()> {
    let py = cls.py();
    let ty = cls.as_type_ptr();
    // SAFETY: `ty` is a live type object (`cls` holds it).
    let heap = unsafe { ffi::PyType_HasFeature(ty, ffi::Py_TPFLAGS_HEAPTYPE) } != 0;
    let generic = py
        .import("builtins")?
        .getattr("object")?
        .getattr("__getattribute__")?;
    if !heap || !cls.getattr("__getattribute__")?.is(&generic) {
        return Err(PyTypeError::new_err(format!(
            "cls={}: expected a class defined in Python whose __getattribute__ is object's",
            cls.repr()?
        )));
    }
    // SAFETY: a heap type, attached to the interpreter; `PyType_Modified` drops the lookups
    // and specialisations cached for it and its subclasses.
    unsafe {
        (*ty).tp_getattro = Some(ffi::PyObject_GenericGetAttr);
        ffi::PyType_Modified(ty);
    }
    Ok(())
}
