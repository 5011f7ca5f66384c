/** The extension's own icon: a stack of saved states with a flag (themed by jp-icon3). */
import { LabIcon } from '@jupyterlab/ui-components';

const CHECKPOINT_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M12 2 2 7l10 5 10-5-10-5zm0 12.2L4.3 10.4 2 11.5l10 5 10-5-2.3-1.1L12 14.2z"/>
    <path d="M4.3 14.9 2 16l10 5 4-2v-2.3l-4 2-7.7-3.8z"/>
    <path d="M18 13h1.6v2.2H23v4.6h-3.4V23H18V13z"/>
  </g>
</svg>`;

export const checkpointIcon = new LabIcon({
  name: 'ckpt-notebook:checkpoint',
  svgstr: CHECKPOINT_SVG
});
