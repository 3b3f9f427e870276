"""HTTP plumbing of the FHIR API: request/response objects, media types, rendering."""
