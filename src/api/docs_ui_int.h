/*
 * docs_ui_int.h — the files of the API documentation page built into kassa (docs_ui.h), as
 * scripts/embed-assets.sh generates them into $(BUILD)/gen/docs_ui.c: for each, its text
 * (NUL-terminated), its length in bytes and its quoted ETag. Static data of the binary: read-only,
 * shared by every request. Only docs_ui.c and its tests use them.
 */
#ifndef KS_API_DOCS_UI_INT_H
#define KS_API_DOCS_UI_INT_H

#include <stddef.h>

/* web/docs/index.html: the page served at GET /docs. */
extern const char ks_docs_ui_page_html[];
extern const size_t ks_docs_ui_page_html_len;
extern const char ks_docs_ui_page_html_etag[];
/* web/docs/init.js: the script that starts Swagger UI on kassa's document. */
extern const char ks_docs_ui_init_js[];
extern const size_t ks_docs_ui_init_js_len;
extern const char ks_docs_ui_init_js_etag[];
/* swagger-ui-dist's swagger-ui.css and swagger-ui-bundle.js (node_modules). */
extern const char ks_docs_ui_css[];
extern const size_t ks_docs_ui_css_len;
extern const char ks_docs_ui_css_etag[];
extern const char ks_docs_ui_bundle_js[];
extern const size_t ks_docs_ui_bundle_js_len;
extern const char ks_docs_ui_bundle_js_etag[];

#endif
