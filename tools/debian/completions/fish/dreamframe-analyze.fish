complete -c dreamframe-analyze -l chart -d 'Where the chart of fps, buffer fill and stage times goes: SVG or PNG, by the extension (.svg, .png). Without it no chart is drawn' -r -F
complete -c dreamframe-analyze -s h -l help -d 'Print help'
complete -c dreamframe-analyze -s V -l version -d 'Print version'
