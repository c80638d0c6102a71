-- gen_ai.provider.name as the semantic conventions spell it, from whichever attribute a
-- dialect writes (gen_ai.system in older semconv and OpenLLMetry/OpenLIT, llm.provider and
-- llm.system in OpenInference). The aliases are data (llmledger.instrumentation.pricing).
transform(
    lower(coalesce(
        nullIf(a[${attr:gen_ai.provider.name}], ''),
        nullIf(a[${attr:gen_ai.system}], ''),
        nullIf(a[${attr:llm.provider}], ''),
        a[${attr:llm.system}]
    )),
    ${provider_alias_names},
    ${provider_alias_targets},
    lower(coalesce(
        nullIf(a[${attr:gen_ai.provider.name}], ''),
        nullIf(a[${attr:gen_ai.system}], ''),
        nullIf(a[${attr:llm.provider}], ''),
        a[${attr:llm.system}]
    ))
)
