// What node components need from the editor: a way to change a param.

import { createContext } from 'react';

export const EditorContext = createContext({ setParam: () => {} });
