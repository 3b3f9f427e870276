"""R4 model access, validation, canonical JSON, formats and the definitions packaged from hl7.fhir.r4.core 4.0.1."""
